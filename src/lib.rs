//! ringws: a WebSocket (RFC 6455) server for Linux on a thread-per-core io_uring reactor.
//!
//! Layers, each a module, with dependencies pointing downward only:
//! `app` (handlers) -> `server` (connections, queues, timers, metrics) -> `reactor` (io_uring) ->
//! `protocol` (sans-I/O RFC 6455). `topics` (topic names, the topic table) is a leaf like `protocol`,
//! used by `app` and `server`. `broker` (Redis pub/sub between nodes, `--broker`) sits beside `server`:
//! `Server::start` owns it, and it hands messages to the workers through the server's inboxes. See
//! `docs/ARCHITECTURE.md` and `docs/CLUSTER.md`.

pub mod app;
pub mod broker;
pub mod channels;
pub mod cli;
pub mod protocol;
pub mod reactor;
pub mod server;
pub mod topics;
