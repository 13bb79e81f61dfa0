//! Channels: what apps build on top of topics. Per-topic history with offsets and epochs (recovery after a
//! reconnect) and per-topic presence, each a node-wide store behind one lock.
//!
//! Leaves like `topics`: no I/O, no clock (callers pass `now`), no server types. The server uses the
//! history to give each publication its offset at the one place every publish passes (so every worker
//! sees a topic's publications in offset order); the pub/sub application speaks the protocol
//! (docs/PROTOCOL.md) and keeps presence.

pub mod history;
pub mod presence;

pub use history::{Epoch, History, HistoryConfig, Position, Recovery, Stored};
pub use presence::{Member, Presence};
