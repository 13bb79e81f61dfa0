//! Server configuration: every limit, timeout and size, with its documented default. Built by the CLI
//! (or by a program embedding ringws) and shared read-only by all workers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// What happens to a connection whose send queue exceeds `max_backpressure` when another connection's
/// message (broadcast, publish) is queued to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Close it with 1008 (policy violation) and a reason.
    Close,
    /// Skip the message for that connection.
    Drop,
}

/// The fanout budget of a broadcasting connection (`server::worker::fanout`): what happens to a sender whose
/// broadcast finds most of its worker's receivers over half of `max_backpressure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderBudgetPolicy {
    /// Pause its reads until those receivers drain (at most 500 ms; a receiver that did not drain by then
    /// is left to the slow-consumer policy and no longer counts against any sender until it drains).
    Pause,
    /// No budget: a sender goes on at full speed and receivers that fall behind meet the slow-consumer
    /// policy.
    Off,
}

/// The `POST /publish` route, on only when configured ([`ServerConfig::publish`]).
#[derive(Clone, PartialEq, Eq)]
pub struct PublishConfig {
    /// The bearer token a publish must carry (`Authorization: Bearer <token>`); compared in constant time.
    pub token: String,
    /// Largest request body (default [`PublishConfig::DEFAULT_MAX_BODY`]); larger -> 413. The route never
    /// accepts more than `max_message_size` either.
    pub max_body: usize,
}

impl PublishConfig {
    /// The default body limit: 64 KiB, enough for a notification, small enough that a connection waiting
    /// for its body holds little.
    pub const DEFAULT_MAX_BODY: usize = 64 << 10;

    /// The route with `token` and the default body limit.
    pub fn new(token: impl Into<String>) -> PublishConfig {
        PublishConfig {
            token: token.into(),
            max_body: Self::DEFAULT_MAX_BODY,
        }
    }
}

/// Never prints the token (configurations are logged).
impl std::fmt::Debug for PublishConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishConfig")
            .field("token", &"<redacted>")
            .field("max_body", &self.max_body)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind (default 0.0.0.0).
    pub bind: IpAddr,
    /// TCP port (default 9001; 0 = ephemeral, the same for every worker).
    pub port: u16,
    /// Worker threads, each with its own ring and listener (default: CPU count).
    pub workers: usize,
    /// Pin worker `i` to CPU `i % cpus` (default on).
    pub pin_workers: bool,
    /// Largest message, reassembled (default 1 MiB); larger -> close 1009. A WebSocket carries chat,
    /// game, market and RPC messages of bytes to kilobytes; bulk data belongs to HTTP, which streams it.
    /// 1 MiB leaves wide room for a rich JSON document or an image in a message while keeping what a
    /// worker may hold for one connection small (the assembly budget bounds the sum).
    pub max_message_size: usize,
    /// Largest single frame payload (default 1 MiB, the CLI's default follows `--max-message-size`);
    /// larger -> close 1009.
    pub max_frame_size: u64,
    /// Most heap one worker holds for messages still being assembled (messages and control frames that
    /// span receives), summed over its connections (default 64 MiB). The connection whose input would
    /// take the worker's total over it is closed with 1013 (try again later).
    pub max_assembly_memory: usize,
    /// Time a connection has to finish a message once its first byte arrived (a fragment or part of a
    /// frame); control frames do not extend it (default 10 s; zero: no deadline). Past it: close 1008.
    pub message_timeout: Duration,
    /// Most open WebSocket connections over all workers (0 = no limit beyond the per-worker one); an
    /// upgrade beyond it is answered 503.
    pub max_connections: usize,
    /// Most connections one worker holds (default: the open-file limit minus the admission reserve). Its
    /// fixed-file table has this many slots plus a small reserve used to answer 503 while full.
    pub max_connections_per_worker: usize,
    /// Length of each worker's listen queue, capped by the kernel at net.core.somaxconn (default: 4096).
    pub listen_backlog: u32,
    /// Largest HTTP request header block (default 8 KiB); larger -> 431.
    pub max_header_bytes: usize,
    /// Most heap one worker holds for HTTP requests not yet complete, summed over its connections: heads
    /// that span receives and `POST /publish` bodies still arriving, counted by capacity (default 16 MiB).
    /// A request whose bytes would take the worker over it is answered 503 (`Retry-After: 1`) and closed.
    /// A request holds this memory at most until `handshake_timeout` after its connection was accepted;
    /// an open WebSocket holds none of it. 16 MiB is room for about 220 full-size publishes (head plus a
    /// 64 KiB body) or 2,000 split 8 KiB heads in flight at once on one worker, far beyond what real
    /// clients, whose requests complete in one or two round trips, keep there.
    pub max_pending_request_memory: usize,
    /// Allowed `Origin` values (empty = any); another origin -> 403.
    pub allowed_origins: Vec<String>,
    /// Subprotocols the server speaks, in preference order (empty = none).
    pub subprotocols: Vec<String>,
    /// Time to complete the opening handshake (default 10 s); the connection is then closed.
    pub handshake_timeout: Duration,
    /// Idle time before the server sends a ping (default 30 s; zero disables idle pings).
    pub idle_timeout: Duration,
    /// Time to wait for any data after an idle ping before closing (default 30 s).
    pub ping_timeout: Duration,
    /// Time to wait for the peer to finish the close handshake (default 5 s).
    pub close_timeout: Duration,
    /// Time to wait for close replies on SIGINT/SIGTERM before exiting (default 5 s).
    pub shutdown_timeout: Duration,
    /// Most bytes queued to one connection before backpressure applies (default 1 MiB).
    pub max_backpressure: usize,
    /// What to do with a slow consumer (default close).
    pub slow_consumer: SlowConsumerPolicy,
    /// Messages each worker's inbox holds for it from other threads (broadcasts and publishes); a message
    /// for a worker whose inbox is full is dropped for that worker and counted (default 8192).
    pub inbox_capacity: usize,
    /// Size of each provided receive buffer (default 16 KiB).
    pub recv_buffer_size: usize,
    /// Receive buffers per worker, a power of two (default 256).
    pub recv_buffers: u16,
    /// In broadcast mode, send a client's message back to itself too (default on).
    pub broadcast_include_sender: bool,
    /// What happens to a connection whose broadcasts find most of its worker's receivers over the fanout
    /// budget, half of `max_backpressure` (default pause, see `server::worker::fanout`).
    pub sender_budget: SenderBudgetPolicy,
    /// The `POST /publish` route (default `None`: off, `/publish` is answered 404 like any unknown path).
    /// When set, publishing needs its bearer token, over HTTP and (in pubsub mode) over WebSocket.
    pub publish: Option<PublishConfig>,
    /// In pubsub mode, most topics one connection may subscribe to (default 64).
    pub max_subscriptions: usize,
    /// The operators' address for `GET /metrics` and `GET /healthz` (plain HTTP, one thread, see
    /// [`crate::server::admin`]); when set, `/metrics` on the WebSocket port answers 404 (`/healthz` stays
    /// there too). Default `None`: `/metrics` is served on the WebSocket port.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS (`wss://`, `https://`): when set, the listener speaks TLS only (default: none, plain).
    /// Build it with [`crate::server::tls::load_server_config`].
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 9001,
            workers: crate::reactor::sys::cpu_count(),
            pin_workers: true,
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            max_assembly_memory: 64 << 20,
            message_timeout: Duration::from_secs(10),
            max_connections: 0,
            max_connections_per_worker: 0,
            listen_backlog: 4096,
            max_header_bytes: 8192,
            max_pending_request_memory: 16 << 20,
            allowed_origins: Vec::new(),
            subprotocols: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            max_backpressure: 1 << 20,
            slow_consumer: SlowConsumerPolicy::Close,
            inbox_capacity: super::inbox::DEFAULT_INBOX_CAPACITY,
            recv_buffer_size: 16 * 1024,
            recv_buffers: 256,
            broadcast_include_sender: true,
            sender_budget: SenderBudgetPolicy::Pause,
            publish: None,
            max_subscriptions: 64,
            metrics_listen: None,
            tls: None,
        }
    }
}

/// Fixed-file slots kept beyond `max_connections_per_worker` so that a worker at its limit can still
/// accept a connection, answer 503 and close it instead of leaving clients hanging.
pub fn admission_reserve(max_connections_per_worker: usize) -> usize {
    (max_connections_per_worker / 64).clamp(4, 256)
}

impl ServerConfig {
    /// The per-worker connection limit after defaults: at most the open-file limit minus the reserve.
    pub fn effective_connections_per_worker(&self) -> usize {
        let file_limit = crate::reactor::sys::open_file_limit().min(1 << 20) as usize;
        let ceiling = file_limit
            .saturating_sub(admission_reserve(file_limit))
            .max(1);
        if self.max_connections_per_worker == 0 {
            ceiling
        } else {
            self.max_connections_per_worker.min(ceiling)
        }
    }

    /// The tick of the workers' timer wheels: a quarter of the shortest timeout, between 10 and 100 ms.
    pub fn tick(&self) -> Duration {
        let mut shortest = self
            .handshake_timeout
            .min(self.close_timeout)
            .min(self.shutdown_timeout);
        if !self.idle_timeout.is_zero() {
            shortest = shortest.min(self.idle_timeout).min(self.ping_timeout);
        }
        if !self.message_timeout.is_zero() {
            shortest = shortest.min(self.message_timeout);
        }
        (shortest / 4).clamp(Duration::from_millis(10), Duration::from_millis(100))
    }
}
