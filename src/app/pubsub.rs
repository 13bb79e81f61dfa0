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
//! Subscribers receive the published message itself (no envelope). Each publish is encoded once and every
//! worker delivers the shared frame to its own subscribers, in publish order. This module owns the wire
//! protocol (commands and replies) only; who subscribes to what is a [`TopicTable`] (`crate::topics`), one
//! per worker (one handler per worker thread): no lock. A topic's first and last subscriber in the worker
//! are told to the node's broker (`--broker`, `crate::broker`), which joins the topic on Redis.
//! Subscribe/unsubscribe allocate (topic names, table entries); publishing allocates only the shared frame.

use serde::Deserialize;
use serde_json::value::RawValue;

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
}

/// The error reply to a WebSocket `pub` when publishing needs a token.
pub const PUBLISH_NEEDS_TOKEN: &str = "publishing needs a token";

impl PubSub {
    pub fn new(max_subscriptions: usize) -> PubSub {
        PubSub {
            topics: TopicTable::new(max_subscriptions),
            reply: String::new(),
            publish_needs_token: false,
        }
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
            1 => {
                let result = self.subscribe(ctx, conn, topic);
                self.answer(ctx, conn, result, name, topic);
            }
            2 => {
                self.unsubscribe(ctx, conn, topic);
                self.answer(ctx, conn, Ok(()), name, topic);
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
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, path: &str) {
        for topic in query_params(path, "topic") {
            if let Err(e) = self.subscribe(ctx, conn, topic) {
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
        for topic in self.topics.remove_subscriber(conn) {
            ctx.core.topic_interest(&topic, false);
        }
    }

    fn on_published(&mut self, ctx: &mut Ctx<'_>, topic: &str, message: &SharedMessage) {
        for conn in self.topics.subscribers(topic) {
            ctx.send_shared(conn, message);
        }
    }
}
