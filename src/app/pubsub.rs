//! `--mode pubsub`: clients subscribe to topics and publish on them.
//!
//! Protocol (documented in `docs/ARCHITECTURE.md`):
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
//! Subscribers receive the published message itself (no envelope). Each publish is encoded once and every
//! worker delivers the shared frame to its own subscribers, in publish order. This module owns the wire
//! protocol (commands and replies) only; who subscribes to what is a [`TopicTable`] (`crate::topics`), one
//! per worker (one handler per worker thread): no lock. A topic's first and last subscriber in the worker
//! are told to the node's broker (`--broker`, `crate::broker`), which joins the topic on Redis.
//! Subscribe/unsubscribe allocate (topic names, table entries); publishing allocates only the shared frame.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::auth::{Access, Auth, Grant};
use crate::server::metrics::{AUTH_DENIED_PUB, AUTH_DENIED_SUB};
use crate::server::{UpgradeDecision, UpgradeRequest};

use crate::protocol::{CloseCode, MessageKind};
use crate::server::http::query_params;
use crate::server::{ConnId, Ctx, Handler, SharedMessage};
use crate::topics::{valid_topic, SubscribeError, TopicTable, INVALID_TOPIC};

#[derive(Deserialize)]
struct Command<'a> {
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    topic: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// The per-worker pub/sub state.
pub struct PubSub {
    /// Local subscribers of each topic, and topics of each local connection.
    topics: TopicTable<ConnId>,
    reply: String,
    /// Refuse WebSocket `pub` commands (publishing needs a token, which a WebSocket client cannot give).
    publish_needs_token: bool,
    /// Token checks and permissions (`--auth-jwt-*`); `None`: every client is anonymous.
    auth: Option<Box<AuthState>>,
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

/// The close code of a connection whose token expired (docs/PROTOCOL.md, "Close codes").
pub const TOKEN_EXPIRED: CloseCode = CloseCode(4001);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The error reply to a WebSocket `pub` when publishing needs a token.
pub const PUBLISH_NEEDS_TOKEN: &str = "publishing needs a token";

impl PubSub {
    pub fn new(max_subscriptions: usize) -> PubSub {
        PubSub {
            topics: TopicTable::new(max_subscriptions),
            reply: String::new(),
            publish_needs_token: false,
            auth: None,
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

    /// Subscribes `conn` to `topic`; an error is the text of the reply. A topic's first subscriber in
    /// this worker, and its last leaving ([`PubSub::unsubscribe`], `on_close`), are told to the node's
    /// broker (`--broker`: the node subscribes to the topic on Redis while any worker wants it).
    fn subscribe(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        topic: &str,
    ) -> Result<(), &'static str> {
        let subscribed = self
            .topics
            .subscribe(conn, topic)
            .map_err(SubscribeError::message)?;
        if subscribed.first {
            ctx.core.topic_interest(topic, true);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, topic: &str) {
        if self.topics.unsubscribe(conn, topic).last {
            ctx.core.topic_interest(topic, false);
        }
    }

    fn answer(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        result: Result<(), &str>,
        op: &str,
        topic: &str,
    ) {
        self.reply.clear();
        let op_json = serde_json::to_string(op).unwrap_or_default();
        let topic_json = serde_json::to_string(topic).unwrap_or_default();
        match result {
            Ok(()) => self
                .reply
                .push_str(&format!("{{\"ok\":{op_json},\"topic\":{topic_json}}}")),
            Err(e) => {
                let e = serde_json::to_string(e).unwrap_or_default();
                self.reply.push_str(&format!(
                    "{{\"error\":{e},\"op\":{op_json},\"topic\":{topic_json}}}"
                ))
            }
        }
        ctx.send(conn, MessageKind::Text, self.reply.as_bytes());
    }

    fn error(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: &str) {
        let e = serde_json::to_string(message).unwrap_or_default();
        self.reply.clear();
        self.reply.push_str(&format!("{{\"error\":{e}}}"));
        ctx.send(conn, MessageKind::Text, self.reply.as_bytes());
    }

    fn command(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        op: u8,
        topic: &str,
        payload: &[u8],
        kind: MessageKind,
    ) {
        let name = match op {
            1 => "sub",
            2 => "unsub",
            _ => "pub",
        };
        match op {
            1 if !self.allowed(ctx, conn, Access::Subscribe, topic) => {
                self.answer(ctx, conn, Err(NOT_ALLOWED), name, topic);
            }
            1 => {
                let result = self.subscribe(ctx, conn, topic);
                self.answer(ctx, conn, result, name, topic);
            }
            2 => {
                self.unsubscribe(ctx, conn, topic);
                self.answer(ctx, conn, Ok(()), name, topic);
            }
            _ if self.auth.is_some() => {
                if !self.allowed(ctx, conn, Access::Publish, topic) {
                    self.answer(ctx, conn, Err(NOT_ALLOWED), name, topic);
                } else if !valid_topic(topic) {
                    self.answer(ctx, conn, Err(INVALID_TOPIC), name, topic);
                } else {
                    ctx.publish(topic, kind, payload);
                }
            }
            _ => {
                if self.publish_needs_token {
                    self.answer(ctx, conn, Err(PUBLISH_NEEDS_TOKEN), name, topic);
                } else if !valid_topic(topic) {
                    self.answer(ctx, conn, Err(INVALID_TOPIC), name, topic);
                } else {
                    ctx.publish(topic, kind, payload);
                }
            }
        }
    }
}

impl Handler for PubSub {
    fn on_upgrade(&mut self, request: &UpgradeRequest<'_>) -> UpgradeDecision {
        let Some(state) = &mut self.auth else {
            return UpgradeDecision::Accept;
        };
        state.pending = None;
        match state
            .auth
            .check(request.header("authorization"), request.path())
        {
            Ok(grant) => {
                state.pending = Some(grant);
                UpgradeDecision::Accept
            }
            Err(failure) => UpgradeDecision::Unauthorized(failure),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, path: &str) {
        if let Some(state) = &mut self.auth {
            // `on_open` follows its request's `on_upgrade` directly (`Handler::on_open`).
            let Some(grant) = state.pending.take() else {
                return ctx.close(conn, CloseCode::POLICY, "no token");
            };
            state
                .expiries
                .insert((grant.exp, conn.key, conn.generation));
            state.grants.insert(conn, grant);
        }
        for topic in query_params(path, "topic") {
            if !self.allowed(ctx, conn, Access::Subscribe, topic) {
                self.answer(ctx, conn, Err(NOT_ALLOWED), "sub", topic);
            } else if let Err(e) = self.subscribe(ctx, conn, topic) {
                self.answer(ctx, conn, Err(e), "sub", topic);
            }
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, payload: &[u8]) {
        match kind {
            MessageKind::Text => {
                let command: Command<'_> = match serde_json::from_slice(payload) {
                    Ok(command) => command,
                    Err(_) => {
                        return self.error(
                            ctx,
                            conn,
                            "malformed command: expected {\"op\":..,\"topic\":..}",
                        );
                    }
                };
                let Some(topic) = command.topic.as_deref() else {
                    return self.error(ctx, conn, "missing topic");
                };
                match &*command.op {
                    "sub" => self.command(ctx, conn, 1, topic, b"", kind),
                    "unsub" => self.command(ctx, conn, 2, topic, b"", kind),
                    "pub" => {
                        let Some(data) = command.data else {
                            return self.error(ctx, conn, "pub needs data");
                        };
                        // A JSON string is delivered as its text; any other value as its JSON text.
                        match serde_json::from_str::<std::borrow::Cow<'_, str>>(data.get()) {
                            Ok(text) => self.command(
                                ctx,
                                conn,
                                3,
                                topic,
                                text.as_bytes(),
                                MessageKind::Text,
                            ),
                            Err(_) => self.command(
                                ctx,
                                conn,
                                3,
                                topic,
                                data.get().as_bytes(),
                                MessageKind::Text,
                            ),
                        }
                    }
                    _ => self.error(ctx, conn, "unknown op (sub, unsub, pub)"),
                }
            }
            MessageKind::Binary => {
                let [op @ 1..=3, topic_len, rest @ ..] = payload else {
                    return self.error(
                        ctx,
                        conn,
                        "malformed binary command: [op 1-3][topic length][topic][payload]",
                    );
                };
                let topic_len = *topic_len as usize;
                if rest.len() < topic_len {
                    return self.error(ctx, conn, "binary command shorter than its topic length");
                }
                let Ok(topic) = std::str::from_utf8(&rest[..topic_len]) else {
                    return self.error(ctx, conn, "topic is not UTF-8");
                };
                self.command(
                    ctx,
                    conn,
                    *op,
                    topic,
                    &rest[topic_len..],
                    MessageKind::Binary,
                );
            }
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
        for topic in self.topics.remove_subscriber(conn) {
            ctx.core.topic_interest(&topic, false);
        }
    }

    /// Closes with 4001 the connections whose token's `exp` has come (one clock read a tick, only while
    /// authenticated connections are open).
    fn on_tick(&mut self, ctx: &mut Ctx<'_>) {
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

    fn on_published(&mut self, ctx: &mut Ctx<'_>, topic: &str, message: &SharedMessage) {
        for conn in self.topics.subscribers(topic) {
            ctx.send_shared(conn, message);
        }
    }
}
