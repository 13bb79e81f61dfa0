//! The built-in applications (`echo`, `broadcast`, `pubsub`), and the [`Handler`] trait and its types that
//! users implement when they embed ringws as a library (defined in `server::handler`, which calls them, and
//! re-exported here).
//!
//! Handlers run on the worker threads' hot path: they must not block, sleep, lock or log per message.

pub mod auth;
mod pubsub;
mod wire;

pub use crate::server::{ConnId, Ctx, Handler, SharedMessage, UpgradeDecision, UpgradeRequest};
pub use auth::Auth;
pub use pubsub::PubSub;
pub use wire::V1;

use crate::protocol::MessageKind;

/// `--mode echo`: every text or binary message comes back to its sender as one message of the same type
/// and content.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, payload: &[u8]) {
        ctx.send(conn, kind, payload);
    }
}

/// `--mode broadcast`: every message a client sends goes to every open connection of every worker
/// (including the sender unless `include_sender` is off). The frame is encoded once and shared.
#[derive(Debug, Clone, Copy)]
pub struct Broadcast {
    pub include_sender: bool,
}

impl Handler for Broadcast {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, payload: &[u8]) {
        let except = if self.include_sender {
            None
        } else {
            Some(conn)
        };
        ctx.broadcast(kind, payload, except);
    }
}
