//! `--mode pubsub`: clients subscribe to topics and publish on them.
//!
//! Protocol (documented in `docs/PROTOCOL.md`):
//! - text frames, JSON: `{"op":"sub","topic":"a"}`, `{"op":"unsub","topic":"a"}`,
//!   `{"op":"pub","topic":"a","data":...}` (a JSON string is delivered as its text, any other JSON value as
//!   its JSON text); answers `{"ok":"sub","topic":"a"}` / `{"ok":"unsub",...}`, errors
//!   `{"error":"...","op":...}` (the connection stays open);
//! - binary frames: `[op][topic length][topic][payload]`, op 1 sub, 2 unsub, 3 pub (payload delivered as a
//!   binary message); answers as above, in text;
//! - the URL: `/ws?topic=a&topic=b` subscribes at open.
//!
//! Subscribing is open to every client. Publishing is too, unless the server requires a publish token
//! ([`PubSub::with_publish_needs_token`], on when `POST /publish` has one): a WebSocket connection carries
//! no token, so its `pub` is then refused with `{"error":"publishing needs a token","op":"pub",...}` and
//! the connection stays open.
//!
//! With authentication ([`PubSub::with_auth`], `--auth-jwt-*`; docs/PROTOCOL.md): `on_upgrade` refuses an
//! upgrade without a valid token (401, before the 101) and keeps the token's [`Grant`] for `on_open`; a
//! `sub` (JSON, binary, `?topic=`) or `pub` outside the token's `channels` is answered
//! `{"error":"not allowed","op":..,"topic":..}` (the connection stays; the permission rule replaces the
//! publish-token rule), and when the token's `exp` passes, `on_tick` closes the connection with 4001. Per
//! authenticated connection: its grant in a map and its expiry in an ordered set (about 100 bytes plus
//! the token's user id and patterns); nothing without auth.
//!
//! Two kinds of client (docs/PROTOCOL.md): a raw client receives the published message itself, exactly as
//! published; a client that opened with the subprotocol `ringws.v1` ([`wire::V1`]) receives publications
//! in an envelope (topic, offset and epoch with history, data), request ids echoed, positions in its
//! replies, and may subscribe "since" a position to recover what it missed. An envelope is made once per
//! node, by the first worker that needs it, and shared ([`SharedMessage::envelope`]).
//!
//! History (`--history-size`, [`crate::channels::history`]): every worker delivers a topic's publications
//! in offset order (they reach every inbox in that order, `Shared::sequence`). It keeps, per topic with
//! local subscribers, the last offset it delivered; a publication whose predecessor never reached it (a
//! handoff dropped for a full inbox) makes the worker read the missing ones from the history first. A subscriber that recovers gets, in its queue, the reply, then the missed
//! publications up to the worker's last delivered offset, then the live ones: no gap, no duplicate.
//!
//! Presence (`--presence`, [`crate::channels::presence`]): a subscription joins the topic's members and
//! leaves it when it ends, however the connection ends (`on_close`); join and leave events go to the
//! `ringws.v1` subscribers that asked for them, through every worker like a publication, never into
//! history.
//! Each publish is encoded once and every
//! worker delivers the shared frame to its own subscribers, in publish order. This module owns the wire
//! protocol (commands and replies) only; who subscribes to what is a [`TopicTable`] (`crate::topics`), one
//! per worker (one handler per worker thread): no lock. A topic's first and last subscriber in the worker
//! are told to the node's broker (`--broker`, `crate::broker`), which joins the topic on Redis.
//! Subscribe/unsubscribe allocate (topic names, table entries); publishing allocates only the shared frame.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::auth::{Access, Auth, Grant};
use super::wire;
use crate::channels::{Epoch, Member, Position, Recovery};
use crate::server::metrics::{AUTH_DENIED_PUB, AUTH_DENIED_SUB};
use crate::server::{UpgradeDecision, UpgradeRequest};

use crate::protocol::{CloseCode, MessageKind};
use crate::server::http::query_params;
use crate::server::{ConnId, Ctx, Fetched, FetchedPage, Handler, SharedMessage};
use crate::topics::{valid_topic, SubscribeError, TopicTable, INVALID_TOPIC};

#[derive(Deserialize)]
struct Command<'a> {
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    topic: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    /// A request id, echoed in the reply (`ringws.v1`).
    #[serde(default)]
    id: Option<u64>,
    /// `sub`: recover from this position; `history`: the publications after it.
    #[serde(borrow, default)]
    since: Option<Since<'a>>,
    /// `sub`: also get this topic's join and leave events.
    #[serde(default)]
    presence: bool,
    /// `history`: at most this many, the latest.
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct Since<'a> {
    offset: u64,
    #[serde(borrow)]
    epoch: std::borrow::Cow<'a, str>,
}

/// The form in which a connection gets publications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
enum Form {
    /// The message itself (a raw WebSocket client).
    #[default]
    Raw,
    /// The `ringws.v1` envelope.
    V1,
    /// An event stream (`GET /sse`): `id: TOPIC:EPOCH:OFFSET` (with history) and the envelope as `data:`;
    /// replies as `data:` events too. Speaks `ringws.v1` otherwise (positions, `recovered`).
    Stream,
}

/// One subscription in the table: the connection, and the form it gets publications in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Sub {
    conn: ConnId,
    form: Form,
}

/// What the handler keeps of a connection that speaks `ringws.v1`, is an event stream, or is listed in
/// presence.
struct ConnInfo {
    form: Form,
    /// Its member entry (client id, user, info), when presence is on.
    member: Option<Member>,
}

/// Across nodes, a `ringws.v1` subscribe waiting for Redis's answer (its position, what it missed): its
/// live publications are held here meanwhile, then sent after the replay.
struct Hold {
    id: Option<u64>,
    /// The recovery asked for (`Some(None)`: from a position that cannot be one).
    since: Option<Option<Position>>,
    held: Vec<SharedMessage>,
    bytes: usize,
    started: Instant,
    /// Answered: the offset the connection gets next. A publication before it (sent in the answer, or
    /// delivered to this node before its subscription to the topic took effect and only now reaching
    /// this worker) is not sent again; the one at it ends the watch; one after it is a gap (counted).
    next: Option<Position>,
}

/// The fetch tag of a held subscribe; history queries take the tags after it.
const HOLD_TAG: u64 = 0;

/// Across nodes, a history query waiting for Redis.
struct Query {
    /// A presence query (else a history query).
    presence: bool,
    conn: ConnId,
    topic: Arc<str>,
    id: Option<u64>,
    limit: usize,
    /// The `since` asked for (`Some(None)`: a position that cannot be one).
    since: Option<Option<Position>>,
    started: Instant,
}

/// The error reply to a presence query across nodes that Redis did not answer.
pub const PRESENCE_UNREACHABLE: &str = "presence not reachable (broker down)";

/// The error reply to a history query across nodes that Redis did not answer.
pub const HISTORY_UNREACHABLE: &str = "history not reachable (broker down)";

/// How long a held subscribe waits for Redis before it is answered without it (`recovered: false`).
pub const HOLD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a subscribe asked for beyond the topic.
#[derive(Default, Clone, Copy)]
struct SubOptions<'a> {
    id: Option<u64>,
    since: Option<(u64, &'a str)>,
    events: bool,
}

/// The per-worker pub/sub state.
pub struct PubSub {
    /// Local subscribers of each topic, and topics of each local connection.
    topics: TopicTable<Sub>,
    /// `ringws.v1` subscribers that asked for join and leave events, per topic.
    watchers: TopicTable<ConnId>,
    reply: String,
    /// Refuse WebSocket `pub` commands (publishing needs a token, which a WebSocket client cannot give).
    publish_needs_token: bool,
    /// Token checks and permissions (`--auth-jwt-*`); `None`: every client is anonymous.
    auth: Option<Box<AuthState>>,
    /// The form of the upgrade (or event stream) just accepted (taken by the `on_open` that follows it).
    pending_form: Form,
    /// The positions an event stream just accepted recovers from (`since=`, `Last-Event-ID`), per topic
    /// (taken by the `on_open` that follows it).
    pending_since: Vec<(String, u64, String)>,
    /// Connections that speak `ringws.v1` or are listed in presence; a raw connection without presence
    /// has no entry.
    conns: HashMap<ConnId, ConnInfo>,
    /// With history: per topic with subscribers here, the position of the last publication delivered.
    delivered: HashMap<Arc<str>, Position>,
    /// Across nodes: subscribes waiting for Redis, per connection (a few at a time).
    holds: HashMap<ConnId, Vec<(Arc<str>, Hold)>>,
    /// Across nodes: history queries waiting for Redis, by fetch tag.
    queries: HashMap<u64, Query>,
    next_tag: u64,
    /// This worker's handoff drops when it last caught its topics up with the history.
    drops_seen: u64,
    /// `--max-subscriptions`: an event stream asking for more topics is refused (429).
    max_subscriptions: usize,
}

/// The authentication state of one worker's `PubSub`.
struct AuthState {
    auth: Arc<Auth>,
    /// The grant of the upgrade just accepted, taken by the `on_open` that follows it.
    pending: Option<Grant>,
    /// The grant of each open authenticated connection.
    grants: HashMap<ConnId, Grant>,
    /// `(exp, key, generation)` of each open authenticated connection, earliest expiry first.
    expiries: BTreeSet<(u64, u32, u32)>,
}

/// The error reply to a command outside the token's `channels`.
pub const NOT_ALLOWED: &str = "not allowed";

/// The error reply to a history query or a recovery where the server keeps no history.
pub const HISTORY_OFF: &str = "history is off (--history-size)";

/// The error reply to a presence query or `"presence":true` where the server keeps no presence.
pub const PRESENCE_OFF: &str = "presence is off (--presence)";

/// The error reply to a `sub` with `since` or `presence` from a raw client.
pub const NEEDS_V1: &str = "since and presence need the ringws.v1 subprotocol";

/// The close code of a connection whose token expired (docs/PROTOCOL.md, "Close codes").
pub const TOKEN_EXPIRED: CloseCode = CloseCode(4001);

/// Most members a presence reply lists (the counts are always whole).
pub const MAX_PRESENCE_LISTED: usize = 1000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `ringws.v1` form of a publication: made once per node (by the first worker that needs it, with
/// `scratch` for its text), then shared.
fn envelope_of(
    ctx: &mut Ctx<'_>,
    scratch: &mut String,
    topic: &str,
    message: &SharedMessage,
) -> SharedMessage {
    let mut make = || {
        wire::envelope(
            scratch,
            topic,
            message.position(),
            message.kind(),
            message.payload(),
        );
        ctx.encode(MessageKind::Text, scratch.as_bytes())
    };
    match message.envelope(&mut make) {
        Some(envelope) => envelope.clone(),
        None => make(),
    }
}

/// A publication in `form`: the message itself, its envelope, or its event-stream form (each made once
/// per node and shared).
fn form_of(
    ctx: &mut Ctx<'_>,
    scratch: &mut String,
    form: Form,
    topic: &str,
    message: &SharedMessage,
) -> SharedMessage {
    match form {
        Form::Raw => message.clone(),
        Form::V1 => envelope_of(ctx, scratch, topic, message),
        Form::Stream => {
            let envelope = envelope_of(ctx, scratch, topic, message);
            let make = || {
                let json = envelope.payload();
                let mut event = Vec::with_capacity(json.len() + topic.len() + 40);
                if let Some(position) = message.position() {
                    event.extend_from_slice(b"id: ");
                    event.extend_from_slice(
                        format!("{topic}:{}:{}\n", position.epoch, position.offset).as_bytes(),
                    );
                }
                // The envelope is one line of JSON (newlines inside strings are escaped).
                event.extend_from_slice(b"data: ");
                event.extend_from_slice(json);
                event.extend_from_slice(b"\n\n");
                SharedMessage::stream(&event)
            };
            match message.event_stream_form(make) {
                Some(stream) => stream.clone(),
                None => {
                    // Not a topic publication (never delivered here): made for this call.
                    let json = envelope.payload();
                    let mut event = b"data: ".to_vec();
                    event.extend_from_slice(json);
                    event.extend_from_slice(b"\n\n");
                    SharedMessage::stream(&event)
                }
            }
        }
    }
}

/// The position an event stream names in `id:` and a client gives back in `Last-Event-ID` or
/// `since=`: `TOPIC:EPOCH:OFFSET` (a topic may hold `:`, so it is read from the right). `None` when
/// it is not one.
fn parse_stream_position(text: &str) -> Option<(&str, &str, u64)> {
    let mut parts = text.trim().rsplitn(3, ':');
    let offset = parts.next()?.parse().ok()?;
    let epoch = parts.next()?;
    let topic = parts.next()?;
    (!topic.is_empty() && Epoch::parse(epoch).is_some()).then_some((topic, epoch, offset))
}

/// What a replay of `entries` queues to a `ringws.v1` client, about (each envelope: the payload, its
/// escaping and base64 aside, and the envelope's fields).
fn replay_bytes(entries: &[(u64, SharedMessage)]) -> usize {
    entries
        .iter()
        .map(|(_, message)| message.payload().len() + 96)
        .sum()
}

/// The error reply to a WebSocket `pub` when publishing needs a token.
pub const PUBLISH_NEEDS_TOKEN: &str = "publishing needs a token";

impl PubSub {
    pub fn new(max_subscriptions: usize) -> PubSub {
        PubSub {
            topics: TopicTable::new(max_subscriptions),
            watchers: TopicTable::new(max_subscriptions),
            reply: String::new(),
            publish_needs_token: false,
            auth: None,
            pending_form: Form::Raw,
            pending_since: Vec::new(),
            conns: HashMap::new(),
            delivered: HashMap::new(),
            holds: HashMap::new(),
            queries: HashMap::new(),
            next_tag: HOLD_TAG + 1,
            drops_seen: 0,
            max_subscriptions,
        }
    }

    /// Requires a valid token at the upgrade, and applies its `channels` to `sub` and `pub` (the
    /// publish-token rule no longer applies to WebSocket `pub`); closes with 4001 when it expires.
    pub fn with_auth(mut self, auth: Arc<Auth>) -> PubSub {
        self.auth = Some(Box::new(AuthState {
            auth,
            pending: None,
            grants: HashMap::new(),
            expiries: BTreeSet::new(),
        }));
        self
    }

    /// Whether `conn` may `access` `topic`: always without auth; with it, by its token's `channels`
    /// (refusals counted).
    fn allowed(&self, ctx: &mut Ctx<'_>, conn: ConnId, access: Access, topic: &str) -> bool {
        let Some(state) = &self.auth else {
            return true;
        };
        let allowed = state
            .grants
            .get(&conn)
            .is_some_and(|grant| grant.permissions.allows(access, topic));
        if !allowed {
            let op = match access {
                Access::Subscribe => AUTH_DENIED_SUB,
                Access::Publish => AUTH_DENIED_PUB,
            };
            ctx.core.metrics().auth.denials[op].inc();
        }
        allowed
    }

    /// With `true`, every WebSocket `pub` is refused with an error reply (the connection stays open):
    /// publishing is reserved to holders of the publish token (`POST /publish`). Subscribing stays open.
    pub fn with_publish_needs_token(mut self, needs_token: bool) -> PubSub {
        self.publish_needs_token = needs_token;
        self
    }

    fn form(&self, conn: ConnId) -> Form {
        self.conns.get(&conn).map_or(Form::Raw, |info| info.form)
    }

    /// Whether `conn` speaks the structured protocol (`ringws.v1`, or an event stream, which gets its
    /// replies and positions).
    fn is_v1(&self, conn: ConnId) -> bool {
        self.form(conn) != Form::Raw
    }

    /// `conn`'s entry in the topic table.
    fn sub_key(&self, conn: ConnId) -> Sub {
        Sub {
            conn,
            form: self.form(conn),
        }
    }

    /// Subscribes `conn` to `topic`. A topic's first subscriber in this worker, and its last leaving
    /// ([`PubSub::unsubscribe`], `on_close`), are told to the node's broker (`--broker`: the node
    /// subscribes to the topic on Redis while any worker wants it) and, with history, pin the topic's log
    /// (this worker delivers from the position it had then). Returns whether the subscription is new.
    fn subscribe(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        topic: &str,
    ) -> Result<bool, &'static str> {
        let sub = self.sub_key(conn);
        if self.topics.holds(sub, topic) {
            return Ok(false);
        }
        let subscribed = self
            .topics
            .subscribe(sub, topic)
            .map_err(SubscribeError::message)?;
        if subscribed.first {
            ctx.core.topic_interest(topic, true);
            if let Some(history) = ctx.history() {
                let topic: Arc<str> = Arc::from(topic);
                let position = history.pin(&topic);
                self.delivered.insert(topic, position);
            }
        }
        self.join(ctx, conn, topic);
        Ok(true)
    }

    fn unsubscribe(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, topic: &str) {
        let sub = self.sub_key(conn);
        let held = self.topics.holds(sub, topic);
        self.take_hold(conn, topic);
        self.watchers.unsubscribe(conn, topic);
        if self.topics.unsubscribe(sub, topic).last {
            self.last_left(ctx, topic);
        }
        if held {
            self.leave(ctx, conn, topic);
        }
    }

    /// The worker's last subscriber of `topic` left.
    fn last_left(&mut self, ctx: &mut Ctx<'_>, topic: &str) {
        ctx.core.topic_interest(topic, false);
        if let Some(history) = ctx.history() {
            history.unpin(topic);
            self.delivered.remove(topic);
        }
    }

    /// Presence: `conn` joined `topic` (an event for the topic's watchers).
    fn join(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, topic: &str) {
        let Some(presence) = ctx.presence() else {
            return;
        };
        let Some(member) = self.conns.get(&conn).and_then(|info| info.member.as_ref()) else {
            return;
        };
        if presence.join(topic, member) {
            wire::presence_event(&mut self.reply, true, topic, member);
            ctx.core.metrics().channels.presence_events.inc();
            ctx.publish_event(topic, self.reply.as_bytes());
            if ctx.presence_across_nodes() {
                let mut json = String::new();
                wire::member(&mut json, member);
                let client = Arc::clone(&member.client);
                ctx.presence_to_nodes(topic, &client, Some(&json), self.reply.as_bytes());
            }
        }
    }

    /// Presence: `conn` left `topic`.
    fn leave(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, topic: &str) {
        let Some(presence) = ctx.presence() else {
            return;
        };
        let Some(client) = self
            .conns
            .get(&conn)
            .and_then(|info| info.member.as_ref())
            .map(|m| Arc::clone(&m.client))
        else {
            return;
        };
        if let Some(member) = presence.leave(topic, &client) {
            wire::presence_event(&mut self.reply, false, topic, &member);
            ctx.core.metrics().channels.presence_events.inc();
            ctx.publish_event(topic, self.reply.as_bytes());
            if ctx.presence_across_nodes() {
                ctx.presence_to_nodes(topic, &client, None, self.reply.as_bytes());
            }
        }
    }

    fn send_reply(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        ctx.send(conn, MessageKind::Text, self.reply.as_bytes());
    }

    fn error(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        id: Option<u64>,
        message: &str,
        op: Option<&str>,
        topic: Option<&str>,
    ) {
        let v1 = self.is_v1(conn);
        wire::error(&mut self.reply, v1, id, message, op, topic);
        self.send_reply(ctx, conn);
    }

    /// `{"ok":op,"topic":T}`; for a `ringws.v1` client with its id and, after a `pub` with history, the
    /// publication's position.
    fn ok(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        id: Option<u64>,
        op: &str,
        topic: &str,
        position: Option<Position>,
    ) {
        let v1 = self.is_v1(conn);
        wire::ok_start(&mut self.reply, id.filter(|_| v1), op, topic);
        if v1 {
            wire::position_fields(&mut self.reply, position);
        }
        self.reply.push('}');
        self.send_reply(ctx, conn);
    }

    /// `sub` with its options: permission, the subscription, then for a `ringws.v1` client the reply with
    /// the position (and `recovered`), then any recovered publications.
    fn sub(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, topic: &str, options: SubOptions<'_>) {
        let v1 = self.is_v1(conn);
        if !self.allowed(ctx, conn, Access::Subscribe, topic) {
            return self.error(ctx, conn, options.id, NOT_ALLOWED, Some("sub"), Some(topic));
        }
        if (options.since.is_some() || options.events) && !v1 {
            return self.error(ctx, conn, options.id, NEEDS_V1, Some("sub"), Some(topic));
        }
        if options.since.is_some() && ctx.history().is_none() {
            return self.error(ctx, conn, options.id, HISTORY_OFF, Some("sub"), Some(topic));
        }
        if options.events && ctx.presence().is_none() {
            return self.error(
                ctx,
                conn,
                options.id,
                PRESENCE_OFF,
                Some("sub"),
                Some(topic),
            );
        }
        let added = match self.subscribe(ctx, conn, topic) {
            Ok(added) => added,
            Err(e) => return self.error(ctx, conn, options.id, e, Some("sub"), Some(topic)),
        };
        if options.events {
            // Within the limit the subscription just made passed: it cannot fail.
            let _ = self.watchers.subscribe(conn, topic);
        }
        if !v1 {
            return self.ok(ctx, conn, None, "sub", topic, None);
        }
        let position = self.delivered.get(topic).copied();
        let since = options.since.and_then(|(offset, epoch)| {
            Some(Position {
                offset,
                epoch: Epoch::parse(epoch)?,
            })
        });
        if added && ctx.history_across_nodes() && !self.mirror_answers(ctx, topic, position, since)
        {
            return self.hold(ctx, conn, topic, options.id, options.since.map(|_| since));
        }
        wire::ok_start(&mut self.reply, options.id, "sub", topic);
        wire::position_fields(&mut self.reply, position);
        let mut replay = Vec::new();
        if let (Some((offset, epoch)), Some(current)) = (options.since, position) {
            let recovered = match (added, Epoch::parse(epoch), ctx.history()) {
                // Already subscribed: it has had every publication since; nothing to replay.
                (false, _, _) => false,
                (true, Some(epoch), Some(history)) => {
                    match history.recover(
                        topic,
                        Position { offset, epoch },
                        current.offset,
                        Instant::now(),
                    ) {
                        // A replay must fit the connection's queue (half its cap), or the client would
                        // be closed as a slow consumer halfway: too big a gap is not recovered.
                        Recovery::Recovered(entries)
                            if replay_bytes(&entries) <= ctx.max_backpressure() / 2 =>
                        {
                            replay = entries;
                            true
                        }
                        Recovery::Recovered(_) => false,
                        Recovery::NotRecovered => false,
                    }
                }
                _ => false,
            };
            let channels = &ctx.core.metrics().channels;
            channels.recoveries[usize::from(!recovered)].inc();
            self.reply.push_str(if recovered {
                ",\"recovered\":true"
            } else {
                ",\"recovered\":false"
            });
        }
        self.reply.push('}');
        self.send_reply(ctx, conn);
        let form = self.form(conn);
        for (_, message) in replay {
            let publication = form_of(ctx, &mut self.reply, form, topic, &message);
            ctx.send_shared(conn, &publication);
        }
    }

    /// Across nodes: whether this node's mirror of the history can answer a subscribe at `position` (the
    /// worker's last delivered) by itself: the position is the stream's (the mirror has had a
    /// publication of the topic since this worker pinned it) and, for a recovery, the whole gap is here.
    fn mirror_answers(
        &self,
        ctx: &Ctx<'_>,
        topic: &str,
        position: Option<Position>,
        since: Option<Position>,
    ) -> bool {
        let (Some(history), Some(position)) = (ctx.history(), position) else {
            return false;
        };
        if history
            .position(topic)
            .is_none_or(|p| p.epoch != position.epoch)
        {
            return false;
        }
        match since {
            None => true,
            Some(since) => matches!(
                history.recover(topic, since, position.offset, Instant::now()),
                Recovery::Recovered(_)
            ),
        }
    }

    /// Across nodes, a subscribe this node cannot answer from its mirror: asks Redis (off the worker)
    /// and holds the subscription's live publications until the answer ([`PubSub::finish_hold`]).
    /// `since`: `Some(None)` for a recovery from a position that cannot be one (an epoch that is not 8
    /// hex digits).
    fn hold(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        topic: &str,
        id: Option<u64>,
        since: Option<Option<Position>>,
    ) {
        let hold = Hold {
            id,
            since,
            held: Vec::new(),
            bytes: 0,
            started: Instant::now(),
            next: None,
        };
        let after = since.map(|since| since.map_or(u64::MAX, |p| p.offset));
        if ctx.fetch(conn, topic, after, HOLD_TAG) {
            self.holds
                .entry(conn)
                .or_default()
                .push((Arc::from(topic), hold));
        } else {
            self.finish_hold(ctx, conn, topic, hold, Err(()));
        }
    }

    /// Answers a held subscribe with what Redis said (`Err`: nothing): the reply (position, `recovered`),
    /// then the missed publications, then the held live ones, each once and in offset order. Recovered
    /// only when Redis's stream has the whole gap in the client's epoch and the live ones follow it
    /// without a hole (one filled from the mirror when the node received them meanwhile).
    fn finish_hold(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        topic: &str,
        hold: Hold,
        result: Result<FetchedPage, ()>,
    ) {
        let mut replay: Vec<SharedMessage> = Vec::new();
        let mut recovered = hold.since.map(|_| false);
        let mut live = hold.held;
        let first_live = live.first().and_then(SharedMessage::position);
        // The position the reply reports: the stream's newest when Redis answered, else just before the
        // first live publication, else the mirror's.
        let mut position = match &result {
            Ok(page) => page.position,
            Err(()) => None,
        };
        if let (Ok(page), Some(current)) = (&result, position) {
            if let Some(Some(since)) = hold.since {
                let whole = since.epoch == current.epoch
                    && since.offset <= current.offset
                    && page
                        .entries
                        .iter()
                        .map(|(offset, _)| *offset)
                        .eq(since.offset + 1..=current.offset);
                if whole && replay_bytes(&page.entries) <= ctx.max_backpressure() / 2 {
                    replay = page.entries.iter().map(|(_, m)| m.clone()).collect();
                    recovered = Some(true);
                }
            }
            // Live ones Redis's answer already has are not sent twice; those of another epoch mean the
            // stream started over meanwhile: the reply then reports the new one.
            live.retain(|m| {
                m.position()
                    .is_none_or(|p| p.epoch != current.epoch || p.offset > current.offset)
            });
            if let Some(first) = live.first().and_then(SharedMessage::position) {
                if first.epoch != current.epoch {
                    replay.clear();
                    recovered = recovered.map(|_| false);
                    position = Some(Position {
                        offset: first.offset - 1,
                        ..first
                    });
                } else if first.offset > current.offset + 1 {
                    // Published after Redis answered, before this node's subscription took effect (or
                    // handed to the workers before the hold began): from the mirror, if it has them.
                    let missing = ctx
                        .history()
                        .map(|h| h.between(topic, current.offset, first.offset - 1))
                        .unwrap_or_default();
                    if missing.len() as u64 == first.offset - 1 - current.offset {
                        replay.extend(missing.into_iter().map(|(_, m)| m));
                    } else {
                        replay.clear();
                        recovered = recovered.map(|_| false);
                        position = Some(Position {
                            offset: first.offset - 1,
                            ..first
                        });
                    }
                }
            }
        } else if let Some(first) = first_live {
            // No answer, or a topic without history in Redis yet: the position is the one before the
            // first live publication (without either, none: the first publication brings it).
            position = Some(Position {
                offset: first.offset - 1,
                ..first
            });
        }
        if let Some(recovered) = recovered {
            ctx.core.metrics().channels.recoveries[usize::from(!recovered)].inc();
        }
        wire::ok_start(&mut self.reply, hold.id, "sub", topic);
        wire::position_fields(&mut self.reply, position);
        match recovered {
            Some(true) => self.reply.push_str(",\"recovered\":true"),
            Some(false) => self.reply.push_str(",\"recovered\":false"),
            None => {}
        }
        self.reply.push('}');
        self.send_reply(ctx, conn);
        let mut last = position;
        let form = self.form(conn);
        for message in replay.iter().chain(live.iter()) {
            let publication = form_of(ctx, &mut self.reply, form, topic, message);
            ctx.send_shared(conn, &publication);
            last = message.position().or(last);
        }
        // Watch the next publication: it must follow what was sent.
        if let Some(last) = last {
            let watch = Hold {
                id: None,
                since: None,
                held: Vec::new(),
                bytes: 0,
                started: Instant::now(),
                next: Some(Position {
                    offset: last.offset + 1,
                    ..last
                }),
            };
            self.holds
                .entry(conn)
                .or_default()
                .push((Arc::from(topic), watch));
        }
    }

    /// Takes `conn`'s hold of `topic`, if any.
    fn take_hold(&mut self, conn: ConnId, topic: &str) -> Option<Hold> {
        let holds = self.holds.get_mut(&conn)?;
        let at = holds.iter().position(|(t, _)| &**t == topic)?;
        let (_, hold) = holds.swap_remove(at);
        if holds.is_empty() {
            self.holds.remove(&conn);
        }
        Some(hold)
    }

    fn publish(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        id: Option<u64>,
        topic: &str,
        payload: &[u8],
        kind: MessageKind,
    ) {
        let refusal = if self.auth.is_some() {
            (!self.allowed(ctx, conn, Access::Publish, topic)).then_some(NOT_ALLOWED)
        } else {
            self.publish_needs_token.then_some(PUBLISH_NEEDS_TOKEN)
        };
        let refusal = refusal.or((!valid_topic(topic)).then_some(INVALID_TOPIC));
        if let Some(refusal) = refusal {
            return self.error(ctx, conn, id, refusal, Some("pub"), Some(topic));
        }
        let position = ctx.publish(topic, kind, payload);
        if id.is_some() && self.is_v1(conn) {
            self.ok(ctx, conn, id, "pub", topic, position);
        }
    }

    /// `history`: the latest publications (at most `limit`), or those after `since`.
    fn history(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, command: &Command<'_>, topic: &str) {
        let id = command.id;
        if !self.allowed(ctx, conn, Access::Subscribe, topic) {
            return self.error(ctx, conn, id, NOT_ALLOWED, Some("history"), Some(topic));
        }
        let Some(history) = ctx.history().cloned() else {
            return self.error(ctx, conn, id, HISTORY_OFF, Some("history"), Some(topic));
        };
        if !valid_topic(topic) {
            return self.error(ctx, conn, id, INVALID_TOPIC, Some("history"), Some(topic));
        }
        ctx.core.metrics().channels.history_queries.inc();
        let now = Instant::now();
        let limit = command.limit.unwrap_or(usize::MAX);
        let since = command.since.as_ref().map(|since| {
            Epoch::parse(&since.epoch).map(|epoch| Position {
                offset: since.offset,
                epoch,
            })
        });
        if ctx.history_across_nodes() {
            // Redis has the whole stream; this node's mirror only what it received.
            let tag = self.next_tag;
            self.next_tag += 1;
            let after = since.map_or(Some(0), |since| Some(since.map_or(u64::MAX, |p| p.offset)));
            if ctx.fetch(conn, topic, after, tag) {
                let query = Query {
                    presence: false,
                    conn,
                    topic: Arc::from(topic),
                    id,
                    limit,
                    since,
                    started: now,
                };
                self.queries.insert(tag, query);
            } else {
                self.error(
                    ctx,
                    conn,
                    id,
                    HISTORY_UNREACHABLE,
                    Some("history"),
                    Some(topic),
                );
            }
            return;
        }
        let (position, entries, recovered) = match since {
            None => match history.last(topic, limit, now) {
                Some((position, entries)) => (Some(position), entries, None),
                None => (None, Vec::new(), None),
            },
            Some(from) => {
                let current = history.position(topic);
                match (current, from) {
                    (Some(current), Some(from)) => {
                        match history.recover(topic, from, current.offset, now) {
                            Recovery::Recovered(mut entries) => {
                                entries.truncate(limit);
                                (Some(current), entries, Some(true))
                            }
                            Recovery::NotRecovered => (Some(current), Vec::new(), Some(false)),
                        }
                    }
                    (current, _) => (current, Vec::new(), Some(false)),
                }
            }
        };
        self.history_reply(ctx, conn, id, topic, position, recovered, &entries);
    }

    /// A presence query across nodes answered by Redis: every node's members (as JSON), counted here.
    fn answer_presence(
        &mut self,
        ctx: &mut Ctx<'_>,
        query: Query,
        result: Result<FetchedPage, ()>,
    ) {
        let Ok(page) = result else {
            let error = PRESENCE_UNREACHABLE;
            let (conn, id) = (query.conn, query.id);
            return self.error(ctx, conn, id, error, Some("presence"), Some(&query.topic));
        };
        let mut users = std::collections::HashSet::new();
        let mut listed = Vec::new();
        for member in &page.members {
            // Written by `wire::member` on some node: a JSON object with a string `user`.
            let Ok(value) = serde_json::from_str::<serde_json::Value>(member) else {
                continue;
            };
            users.insert(value["user"].as_str().unwrap_or("").to_string());
            listed.push(&**member);
        }
        use std::fmt::Write;
        wire::ok_start(&mut self.reply, query.id, "presence", &query.topic);
        let _ = write!(
            self.reply,
            ",\"connections\":{},\"users\":{},\"members\":[",
            listed.len(),
            users.len()
        );
        let most = ctx.max_backpressure() / 2;
        let mut shown = 0;
        for member in listed.iter().take(MAX_PRESENCE_LISTED) {
            if self.reply.len() >= most {
                break;
            }
            if shown > 0 {
                self.reply.push(',');
            }
            self.reply.push_str(member);
            shown += 1;
        }
        self.reply.push(']');
        if listed.len() > shown {
            self.reply.push_str(",\"truncated\":true");
        }
        self.reply.push('}');
        self.send_reply(ctx, query.conn);
    }

    /// A history query across nodes answered by Redis.
    fn answer_query(&mut self, ctx: &mut Ctx<'_>, query: Query, result: Result<FetchedPage, ()>) {
        if query.presence {
            return self.answer_presence(ctx, query, result);
        }
        let Query {
            conn,
            topic,
            id,
            limit,
            since,
            ..
        } = query;
        let Ok(page) = result else {
            let error = HISTORY_UNREACHABLE;
            return self.error(ctx, conn, id, error, Some("history"), Some(&topic));
        };
        let mut entries = page.entries;
        let recovered = match (since, page.position) {
            (None, _) => {
                let skip = entries.len().saturating_sub(limit);
                entries.drain(..skip);
                None
            }
            (Some(Some(since)), Some(current)) => {
                let whole = since.epoch == current.epoch
                    && since.offset <= current.offset
                    && entries
                        .iter()
                        .map(|(offset, _)| *offset)
                        .eq(since.offset + 1..=current.offset);
                if !whole {
                    entries.clear();
                }
                entries.truncate(limit);
                Some(whole)
            }
            (Some(_), _) => {
                entries.clear();
                Some(false)
            }
        };
        self.history_reply(ctx, conn, id, &topic, page.position, recovered, &entries);
    }

    #[allow(clippy::too_many_arguments)]
    fn history_reply(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        id: Option<u64>,
        topic: &str,
        position: Option<Position>,
        recovered: Option<bool>,
        entries: &[(u64, SharedMessage)],
    ) {
        wire::ok_start(&mut self.reply, id, "history", topic);
        wire::position_fields(&mut self.reply, position);
        if let Some(recovered) = recovered {
            self.reply.push_str(if recovered {
                ",\"recovered\":true"
            } else {
                ",\"recovered\":false"
            });
        }
        self.reply.push_str(",\"publications\":[");
        // One reply holds at most half the connection's queue cap, oldest first; the client asks for the
        // rest with `since` its last offset.
        let most = ctx.max_backpressure() / 2;
        let mut more = false;
        for (i, (offset, message)) in entries.iter().enumerate() {
            if self.reply.len() >= most {
                more = true;
                break;
            }
            if i > 0 {
                self.reply.push(',');
            }
            use std::fmt::Write;
            let _ = write!(self.reply, "{{\"offset\":{offset},");
            wire::data_field(&mut self.reply, message.kind(), message.payload());
            self.reply.push('}');
        }
        self.reply.push(']');
        if more {
            self.reply.push_str(",\"more\":true");
        }
        self.reply.push('}');
        self.send_reply(ctx, conn);
    }

    /// `presence`: the topic's members (at most [`MAX_PRESENCE_LISTED`]) and counts.
    fn presence(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, id: Option<u64>, topic: &str) {
        if !self.allowed(ctx, conn, Access::Subscribe, topic) {
            return self.error(ctx, conn, id, NOT_ALLOWED, Some("presence"), Some(topic));
        }
        let Some(presence) = ctx.presence().cloned() else {
            return self.error(ctx, conn, id, PRESENCE_OFF, Some("presence"), Some(topic));
        };
        if ctx.presence_across_nodes() {
            // Every node's members are in Redis.
            let tag = self.next_tag;
            self.next_tag += 1;
            if ctx.fetch_presence(conn, topic, tag) {
                let query = Query {
                    presence: true,
                    conn,
                    topic: Arc::from(topic),
                    id,
                    limit: MAX_PRESENCE_LISTED,
                    since: None,
                    started: Instant::now(),
                };
                self.queries.insert(tag, query);
            } else {
                self.error(
                    ctx,
                    conn,
                    id,
                    PRESENCE_UNREACHABLE,
                    Some("presence"),
                    Some(topic),
                );
            }
            return;
        }
        let (members, connections, users) = presence.members(topic);
        use std::fmt::Write;
        wire::ok_start(&mut self.reply, id, "presence", topic);
        let _ = write!(
            self.reply,
            ",\"connections\":{connections},\"users\":{users},\"members\":["
        );
        let most = ctx.max_backpressure() / 2;
        let mut listed = 0;
        for member in members.iter().take(MAX_PRESENCE_LISTED) {
            if self.reply.len() >= most {
                break;
            }
            if listed > 0 {
                self.reply.push(',');
            }
            wire::member(&mut self.reply, member);
            listed += 1;
        }
        self.reply.push(']');
        if members.len() > listed {
            self.reply.push_str(",\"truncated\":true");
        }
        self.reply.push('}');
        self.send_reply(ctx, conn);
    }

    /// After handoffs to this worker were dropped (a full inbox), delivers from the history what its
    /// topics missed, without waiting for their next publication (which may never come). One look at the
    /// history per topic with subscribers here, only on a tick after a drop.
    fn catch_up_after_drops(&mut self, ctx: &mut Ctx<'_>) {
        let drops = ctx.core.metrics().handoff_drops.get();
        if drops == self.drops_seen {
            return;
        }
        self.drops_seen = drops;
        let Some(history) = ctx.history().cloned() else {
            return;
        };
        let topics: Vec<(Arc<str>, Position)> = self
            .delivered
            .iter()
            .map(|(topic, position)| (Arc::clone(topic), *position))
            .collect();
        for (topic, last) in topics {
            let Some(current) = history.position(&topic) else {
                continue;
            };
            if current.epoch != last.epoch || current.offset <= last.offset {
                continue;
            }
            let missing = history.between(&topic, last.offset, current.offset);
            let channels = &ctx.core.metrics().channels;
            channels.catch_ups.add(missing.len() as u64);
            channels
                .delivery_gaps
                .add(current.offset - last.offset - missing.len() as u64);
            for (_, message) in &missing {
                self.deliver(ctx, &topic, message);
            }
            if let Some(last) = self.delivered.get_mut(&topic) {
                *last = current;
            }
        }
    }

    /// Delivers a publication to this worker's subscribers of `topic`: the message itself to raw ones,
    /// its envelope to `ringws.v1` ones.
    fn deliver(&mut self, ctx: &mut Ctx<'_>, topic: &str, message: &SharedMessage) {
        // Made at the first `ringws.v1` (or event-stream) subscriber (once per node: later workers take
        // the shared ones).
        let mut envelope: Option<SharedMessage> = None;
        let mut stream: Option<SharedMessage> = None;
        let mut over = Vec::new();
        let mut done = Vec::new();
        for sub in self.topics.subscribers(topic) {
            if sub.form != Form::Raw && !self.holds.is_empty() {
                let held = self
                    .holds
                    .get_mut(&sub.conn)
                    .and_then(|holds| holds.iter_mut().find(|(t, _)| &**t == topic));
                if let Some((_, hold)) = held {
                    match (hold.next, message.position()) {
                        (None, _) => {
                            hold.bytes += message.payload().len() + 96;
                            hold.held.push(message.clone());
                            if hold.bytes > ctx.max_backpressure() / 2 {
                                over.push(sub.conn);
                            }
                            continue;
                        }
                        (Some(next), Some(p))
                            if p.epoch == next.epoch && p.offset < next.offset =>
                        {
                            continue;
                        }
                        (Some(next), p) => {
                            if p.is_some_and(|p| p.epoch == next.epoch && p.offset > next.offset) {
                                ctx.core.metrics().channels.delivery_gaps.inc();
                            }
                            done.push(sub.conn);
                        }
                    }
                }
            }
            match sub.form {
                Form::Raw => {
                    ctx.send_shared(sub.conn, message);
                }
                Form::V1 => {
                    let envelope = envelope
                        .get_or_insert_with(|| envelope_of(ctx, &mut self.reply, topic, message));
                    ctx.send_shared(sub.conn, envelope);
                }
                Form::Stream => {
                    let stream = stream.get_or_insert_with(|| {
                        form_of(ctx, &mut self.reply, Form::Stream, topic, message)
                    });
                    ctx.send_shared(sub.conn, stream);
                }
            }
        }
        // Watches that ended.
        for conn in done {
            self.take_hold(conn, topic);
        }
        // Holds that took more than a replay may: answered now, without Redis.
        for conn in over {
            if let Some(hold) = self.take_hold(conn, topic) {
                self.finish_hold(ctx, conn, topic, hold, Err(()));
            }
        }
    }

    /// An event stream's request (`GET /sse?topic=..`), its token already checked: its topics must be
    /// given (400), valid (400), within `--max-subscriptions` (429) and, with auth, all within the token's
    /// `channels.sub` (403: an event stream has no way to tell a refused topic but its answer). Keeps the
    /// positions it recovers from: each `since=TOPIC:EPOCH:OFFSET`, and the `Last-Event-ID` header (what
    /// a browser sends when it reconnects by itself), which wins for its topic.
    fn admit_event_stream(&mut self, request: &UpgradeRequest<'_>) -> UpgradeDecision {
        let refuse = |status: u16, reason: String| UpgradeDecision::Refuse {
            status,
            reason: reason.into(),
        };
        let topics: Vec<&str> = query_params(request.path(), "topic").collect();
        if topics.is_empty() {
            return refuse(
                400,
                "an event stream needs ?topic=NAME (one or more)".into(),
            );
        }
        if let Some(bad) = topics.iter().find(|topic| !valid_topic(topic)) {
            return refuse(400, format!("{INVALID_TOPIC}: {bad}"));
        }
        if topics.len() > self.max_subscriptions {
            return refuse(
                429,
                format!(
                    "{}: {} topics, at most {}",
                    SubscribeError::LimitReached.message(),
                    topics.len(),
                    self.max_subscriptions
                ),
            );
        }
        if let Some(grant) = self.auth.as_ref().and_then(|state| state.pending.as_ref()) {
            if let Some(denied) = topics
                .iter()
                .find(|topic| !grant.permissions.allows(Access::Subscribe, topic))
            {
                return refuse(403, format!("{NOT_ALLOWED}: {denied}"));
            }
        }
        let last_event_id = request
            .header("last-event-id")
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(parse_stream_position);
        let given = query_params(request.path(), "since").filter_map(parse_stream_position);
        for (topic, epoch, offset) in given.chain(last_event_id) {
            if !topics.contains(&topic) {
                continue;
            }
            self.pending_since.retain(|(t, _, _)| t != topic);
            self.pending_since
                .push((topic.to_string(), offset, epoch.to_string()));
        }
        UpgradeDecision::Accept
    }

    fn binary(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, payload: &[u8]) {
        let [op @ 1..=3, topic_len, rest @ ..] = payload else {
            let message = "malformed binary command: [op 1-3][topic length][topic][payload]";
            return self.error(ctx, conn, None, message, None, None);
        };
        let topic_len = *topic_len as usize;
        if rest.len() < topic_len {
            let message = "binary command shorter than its topic length";
            return self.error(ctx, conn, None, message, None, None);
        }
        let Ok(topic) = std::str::from_utf8(&rest[..topic_len]) else {
            return self.error(ctx, conn, None, "topic is not UTF-8", None, None);
        };
        match op {
            1 => self.sub(ctx, conn, topic, SubOptions::default()),
            2 => {
                self.unsubscribe(ctx, conn, topic);
                self.ok(ctx, conn, None, "unsub", topic, None);
            }
            _ => self.publish(
                ctx,
                conn,
                None,
                topic,
                &rest[topic_len..],
                MessageKind::Binary,
            ),
        }
    }
}

impl Handler for PubSub {
    fn serves_event_streams(&self) -> bool {
        true
    }

    fn on_upgrade(&mut self, request: &UpgradeRequest<'_>) -> UpgradeDecision {
        self.pending_form = if request.is_event_stream() {
            Form::Stream
        } else if request.subprotocol() == Some(wire::V1) {
            Form::V1
        } else {
            Form::Raw
        };
        self.pending_since.clear();
        if let Some(state) = &mut self.auth {
            state.pending = None;
            match state
                .auth
                .check(request.header("authorization"), request.path())
            {
                Ok(grant) => state.pending = Some(grant),
                Err(failure) => return UpgradeDecision::Unauthorized(failure),
            }
        }
        if request.is_event_stream() {
            return self.admit_event_stream(request);
        }
        UpgradeDecision::Accept
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, path: &str) {
        let form = std::mem::take(&mut self.pending_form);
        let since = std::mem::take(&mut self.pending_since);
        let mut user: Arc<str> = Arc::from("");
        let mut info = None;
        if let Some(state) = &mut self.auth {
            // `on_open` follows its request's `on_upgrade` directly (`Handler::on_open`).
            let Some(grant) = state.pending.take() else {
                return ctx.close(conn, CloseCode::POLICY, "no token");
            };
            user = Arc::from(&*grant.user);
            info = grant.info.clone();
            state
                .expiries
                .insert((grant.exp, conn.key, conn.generation));
            state.grants.insert(conn, grant);
        }
        let node = ctx.node_name();
        let member = ctx.presence().is_some().then(|| Member {
            client: Arc::from(match node {
                // Unique among every node's connections.
                Some(node) => format!("{node}.{}.{}.{}", ctx.worker(), conn.key, conn.generation),
                None => format!("{}.{}.{}", ctx.worker(), conn.key, conn.generation),
            }),
            user,
            info,
        });
        if form != Form::Raw || member.is_some() {
            self.conns.insert(conn, ConnInfo { form, member });
        }
        if form == Form::Stream {
            // Every topic as a `ringws.v1` subscribe: a reply event each (position, `recovered` when it
            // recovers), then what it recovered, then the live publications.
            for topic in query_params(path, "topic") {
                let since = since
                    .iter()
                    .find(|(t, _, _)| t == topic)
                    .map(|(_, offset, epoch)| (*offset, epoch.as_str()));
                let options = SubOptions {
                    since,
                    ..SubOptions::default()
                };
                self.sub(ctx, conn, topic, options);
            }
            return;
        }
        for topic in query_params(path, "topic") {
            if !self.allowed(ctx, conn, Access::Subscribe, topic) {
                self.error(ctx, conn, None, NOT_ALLOWED, Some("sub"), Some(topic));
            } else if let Err(e) = self.subscribe(ctx, conn, topic) {
                self.error(ctx, conn, None, e, Some("sub"), Some(topic));
            }
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, payload: &[u8]) {
        if kind == MessageKind::Binary {
            return self.binary(ctx, conn, payload);
        }
        let command: Command<'_> = match serde_json::from_slice(payload) {
            Ok(command) => command,
            Err(_) => {
                let message = "malformed command: expected {\"op\":..,\"topic\":..}";
                return self.error(ctx, conn, None, message, None, None);
            }
        };
        let id = command.id;
        let Some(topic) = command.topic.as_deref() else {
            return self.error(ctx, conn, id, "missing topic", None, None);
        };
        match &*command.op {
            "sub" => {
                let options = SubOptions {
                    id,
                    since: command.since.as_ref().map(|s| (s.offset, &*s.epoch)),
                    events: command.presence,
                };
                self.sub(ctx, conn, topic, options);
            }
            "unsub" => {
                self.unsubscribe(ctx, conn, topic);
                self.ok(ctx, conn, id, "unsub", topic, None);
            }
            "pub" => {
                let Some(data) = command.data else {
                    return self.error(ctx, conn, id, "pub needs data", Some("pub"), Some(topic));
                };
                // A JSON string is delivered as its text; any other value as its JSON text.
                match serde_json::from_str::<std::borrow::Cow<'_, str>>(data.get()) {
                    Ok(text) => {
                        self.publish(ctx, conn, id, topic, text.as_bytes(), MessageKind::Text)
                    }
                    Err(_) => self.publish(
                        ctx,
                        conn,
                        id,
                        topic,
                        data.get().as_bytes(),
                        MessageKind::Text,
                    ),
                }
            }
            "history" => self.history(ctx, conn, &command, topic),
            "presence" => self.presence(ctx, conn, id, topic),
            _ => self.error(
                ctx,
                conn,
                id,
                "unknown op (sub, unsub, pub, history, presence)",
                None,
                None,
            ),
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _code: Option<CloseCode>) {
        if let Some(state) = &mut self.auth {
            if let Some(grant) = state.grants.remove(&conn) {
                state
                    .expiries
                    .remove(&(grant.exp, conn.key, conn.generation));
            }
        }
        let sub = self.sub_key(conn);
        if ctx.presence().is_some() {
            let held: Vec<Box<str>> = self.topics.topics_of(sub).to_vec();
            for topic in held {
                self.leave(ctx, conn, &topic);
            }
        }
        self.holds.remove(&conn);
        if !self.queries.is_empty() {
            self.queries.retain(|_, query| query.conn != conn);
        }
        self.watchers.remove_subscriber(conn);
        for topic in self.topics.remove_subscriber(sub) {
            self.last_left(ctx, &topic);
        }
        self.conns.remove(&conn);
    }

    /// Closes with 4001 the connections whose token's `exp` has come (one clock read a tick, only while
    /// authenticated connections are open), and drops expired history.
    fn on_tick(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(history) = ctx.history() {
            history.sweep(Instant::now());
        }
        self.catch_up_after_drops(ctx);
        if !self.queries.is_empty() {
            let now = Instant::now();
            let late: Vec<u64> = self
                .queries
                .iter()
                .filter(|(_, q)| now.duration_since(q.started) > HOLD_TIMEOUT)
                .map(|(tag, _)| *tag)
                .collect();
            for tag in late {
                if let Some(query) = self.queries.remove(&tag) {
                    self.answer_query(ctx, query, Err(()));
                }
            }
        }
        if !self.holds.is_empty() {
            let now = Instant::now();
            let late: Vec<(ConnId, Arc<str>)> = self
                .holds
                .iter()
                .flat_map(|(conn, holds)| {
                    holds
                        .iter()
                        .filter(|(_, hold)| now.duration_since(hold.started) > HOLD_TIMEOUT)
                        .map(|(topic, _)| (*conn, Arc::clone(topic)))
                })
                .collect();
            for (conn, topic) in late {
                match self.take_hold(conn, &topic) {
                    Some(hold) if hold.next.is_none() => {
                        self.finish_hold(ctx, conn, &topic, hold, Err(()))
                    }
                    // A watch with nothing published for a while: over.
                    _ => {}
                }
            }
        }
        let Some(state) = &mut self.auth else {
            return;
        };
        if state.expiries.is_empty() {
            return;
        }
        let now = unix_now();
        while let Some(&(exp, key, generation)) = state.expiries.first() {
            if exp > now {
                break;
            }
            state.expiries.pop_first();
            let conn = ConnId { key, generation };
            state.grants.remove(&conn);
            ctx.core.metrics().auth.expired_closes.inc();
            ctx.close(conn, TOKEN_EXPIRED, "token expired");
        }
    }

    fn on_fetched(&mut self, ctx: &mut Ctx<'_>, fetched: Fetched) {
        if fetched.tag != HOLD_TAG {
            if let Some(query) = self.queries.remove(&fetched.tag) {
                self.answer_query(ctx, query, fetched.result);
            }
            return;
        }
        let waiting = self.holds.get(&fetched.conn).is_some_and(|holds| {
            holds
                .iter()
                .any(|(t, hold)| *t == fetched.topic && hold.next.is_none())
        });
        if !waiting {
            return;
        }
        if let Some(hold) = self.take_hold(fetched.conn, &fetched.topic) {
            self.finish_hold(ctx, fetched.conn, &fetched.topic, hold, fetched.result);
        }
    }

    fn on_published(&mut self, ctx: &mut Ctx<'_>, topic: &str, message: &SharedMessage) {
        if message.is_event() {
            for conn in self.watchers.subscribers(topic) {
                ctx.send_shared(conn, message);
            }
            return;
        }
        let Some(position) = message.position() else {
            return self.deliver(ctx, topic, message);
        };
        let Some(last) = self.delivered.get(topic).copied() else {
            // No subscriber here.
            return;
        };
        let new_epoch = position.epoch != last.epoch;
        if new_epoch && !ctx.history().is_some_and(|h| h.is_mirror()) {
            // Published before this worker pinned the topic's log (a log dropped and made again).
            return;
        }
        if !new_epoch && position.offset <= last.offset {
            // Delivered already (read back from the history when a successor came first).
            return;
        }
        // In a mirror, another epoch is the stream's first publication here or a stream that started
        // over: delivered from it on.
        if !new_epoch && position.offset > last.offset + 1 {
            // Its predecessors are still on their way (published by another worker): deliver them first,
            // from the history.
            let missing = ctx
                .history()
                .map(|history| history.between(topic, last.offset, position.offset - 1))
                .unwrap_or_default();
            let channels = &ctx.core.metrics().channels;
            channels.catch_ups.add(missing.len() as u64);
            channels
                .delivery_gaps
                .add(position.offset - 1 - last.offset - missing.len() as u64);
            for (_, message) in missing {
                self.deliver(ctx, topic, &message);
            }
        }
        if let Some(last) = self.delivered.get_mut(topic) {
            *last = position;
        }
        self.deliver(ctx, topic, message);
    }
}
