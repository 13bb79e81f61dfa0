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
    /// After a handover to a new process (`ringws serve --takeover`, see [`crate::server::takeover`]):
    /// the window over which the open connections are closed with 1001, one by one in a random order,
    /// so that their clients do not all reconnect at once (default 10 s; zero: all at once). The
    /// shutdown timeout follows the window. A plain SIGINT/SIGTERM does not drain: it closes at once.
    pub drain_window: Duration,
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
    /// `--broker`: Redis servers joining this node to others (`redis://[user:pass@]HOST:PORT[/db]`, see
    /// docs/CLUSTER.md); topics are spread over several by rendezvous hashing. Empty (the default): a
    /// node on its own, no broker thread.
    pub broker: Vec<String>,
    /// `--broker-password-file`: the password of every `--broker` URL without one of its own (`AUTH
    /// password`, or `AUTH user password` for `redis://user@...`), kept off the command line. Default
    /// `None`. Its `Debug` never shows it.
    pub broker_password: Option<crate::broker::BrokerPassword>,
    /// TLS (`wss://`, `https://`): when set, the listener speaks TLS only (default: none, plain).
    /// Build it with [`crate::server::tls::load_server_config`].
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// permessage-deflate (RFC 7692): `--compression` (default on, without context takeover: nothing per
    /// connection), `--compression-threshold` (messages shorter than this go plain; default 128 B),
    /// `--compression-level` (0..=9, default 6), `--compression-window-bits` (9..=15, default 15).
    pub compression: crate::protocol::deflate::DeflateConfig,
    /// Per-topic history (`--history-size`, `--history-ttl`, `--history-max-bytes`): every publication on
    /// a topic gets an offset and is kept, bounded, for recovery (see [`crate::channels::history`]). Default
    /// `None`: no offsets, nothing kept.
    pub history: Option<crate::channels::HistoryConfig>,
    /// Per-topic presence (`--presence`): who subscribes to each topic, with join and leave events for
    /// clients that ask (see [`crate::channels::presence`]). Default off.
    pub presence: bool,
    /// Across nodes (`--broker` with `--presence`): how long a node's members stay listed in Redis after
    /// its last refresh (it refreshes every third of it), so a node that dies drops out within it
    /// (`--presence-ttl`, default 15 s).
    pub presence_ttl: Duration,
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
            drain_window: Duration::from_secs(10),
            max_backpressure: 1 << 20,
            slow_consumer: SlowConsumerPolicy::Close,
            inbox_capacity: super::inbox::DEFAULT_INBOX_CAPACITY,
            recv_buffer_size: 16 * 1024,
            recv_buffers: 256,
            broadcast_include_sender: true,
            sender_budget: SenderBudgetPolicy::Pause,
            publish: None,
            max_subscriptions: 64,
            history: None,
            presence: false,
            presence_ttl: Duration::from_secs(15),
            metrics_listen: None,
            broker: Vec::new(),
            broker_password: None,
            tls: None,
            compression: crate::protocol::deflate::DeflateConfig::default(),
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

impl ServerConfig {
    /// The `--compression*` flags: level, windows and memory level in range.
    fn validate_compression(&self) -> Result<(), ConfigError> {
        let deflate = &self.compression;
        if deflate.level > 9 {
            return invalid(
                "--compression-level",
                format!("{}: must be 0 (store) to 9 (best)", deflate.level),
            );
        }
        if !(9..=15).contains(&deflate.max_window_bits) {
            return invalid(
                "--compression-window-bits",
                format!("{}: must be 9 to 15", deflate.max_window_bits),
            );
        }
        if !(9..=15).contains(&deflate.context_window_bits) {
            return invalid(
                "--compression-window-bits",
                format!("{}: must be 9 to 15", deflate.context_window_bits),
            );
        }
        if !(1..=9).contains(&deflate.context_mem_level) {
            return invalid(
                "--compression-mem-level",
                format!("{}: must be 1 to 9", deflate.context_mem_level),
            );
        }
        Ok(())
    }
}

/// A configuration value out of its range, or two values that contradict each other. `flag` is the
/// `ringws serve` flag of the field (the field's name in kebab case); the CLI exits with status 2 on it
/// and [`crate::server::Server::start`] refuses to start (`InvalidInput`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag, e.g. `--recv-buffer-size`.
    pub flag: &'static str,
    /// What is wrong, with the value given.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.flag, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The longest timeout accepted (one day): beyond it a value is a mistake, and deadlines far in the
/// future only risk overflowing clock arithmetic.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The range of `recv_buffer_size`: a buffer below 1 KiB wastes a completion per few bytes; one above
/// 64 MiB (times `recv_buffers`, per worker) is memory no receive needs.
pub const RECV_BUFFER_SIZE_RANGE: std::ops::RangeInclusive<usize> = 1024..=64 << 20;
/// The range of `listen_backlog` (the kernel caps it at net.core.somaxconn anyway).
pub const LISTEN_BACKLOG_RANGE: std::ops::RangeInclusive<u32> = 1..=1_000_000;
/// The smallest `max_header_bytes`: room for an upgrade request with its required headers.
pub const MIN_HEADER_BYTES: usize = 256;
/// The most receive buffers per worker (the kernel's limit for a provided buffer ring).
pub const MAX_RECV_BUFFERS: u16 = 32768;

fn invalid(flag: &'static str, message: String) -> Result<(), ConfigError> {
    Err(ConfigError { flag, message })
}

/// An RFC 7230 token character (a subprotocol name is a token, RFC 6455 4.1).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl ServerConfig {
    /// Checks every field's range and the fields that depend on each other; the first problem found is
    /// returned, naming the flag and the value. Values the flags document as special (0 = no limit, no
    /// deadline, default) are valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 {
            return invalid("--workers", "0: at least one worker is needed".into());
        }
        if self.max_message_size == 0 {
            return invalid("--max-message-size", "0: must be at least 1 byte".into());
        }
        if self.max_frame_size == 0 {
            return invalid("--max-frame-size", "0: must be at least 1 byte".into());
        }
        if self.max_frame_size > self.max_message_size as u64 {
            return invalid(
                "--max-frame-size",
                format!(
                    "{} bytes is above --max-message-size ({} bytes): a frame is part of a message",
                    self.max_frame_size, self.max_message_size
                ),
            );
        }
        if self.max_assembly_memory < self.max_message_size {
            return invalid(
                "--max-assembly-memory",
                format!(
                    "{} bytes is below --max-message-size ({} bytes): a largest message could never be \
                     assembled",
                    self.max_assembly_memory, self.max_message_size
                ),
            );
        }
        if !LISTEN_BACKLOG_RANGE.contains(&self.listen_backlog) {
            return invalid(
                "--listen-backlog",
                format!(
                    "{}: must be between {} and {}",
                    self.listen_backlog,
                    LISTEN_BACKLOG_RANGE.start(),
                    LISTEN_BACKLOG_RANGE.end()
                ),
            );
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return invalid(
                "--max-header-bytes",
                format!(
                    "{}: must be at least {MIN_HEADER_BYTES} bytes (an upgrade request's headers)",
                    self.max_header_bytes
                ),
            );
        }
        if self.max_pending_request_memory < self.max_header_bytes {
            return invalid(
                "--max-pending-request-memory",
                format!(
                    "{} bytes is below --max-header-bytes ({} bytes): a largest request head could never \
                     be held",
                    self.max_pending_request_memory, self.max_header_bytes
                ),
            );
        }
        if self.presence_ttl < Duration::from_millis(300) {
            return invalid(
                "--presence-ttl",
                format!("{:?}: at least 300ms", self.presence_ttl),
            );
        }
        if let Some(history) = &self.history {
            if history.ttl.is_zero() {
                return invalid(
                    "--history-ttl",
                    "0: publications would expire at once".into(),
                );
            }
            if history.max_bytes < 64 * 1024 {
                return invalid(
                    "--history-max-bytes",
                    format!("{} bytes: at least 64KiB", history.max_bytes),
                );
            }
        }
        for origin in &self.allowed_origins {
            if origin.is_empty() || origin.chars().any(char::is_whitespace) {
                return invalid(
                    "--allowed-origins",
                    format!("{origin:?}: an origin is one non-empty value without spaces"),
                );
            }
        }
        for protocol in &self.subprotocols {
            if protocol.is_empty() || !protocol.chars().all(is_token_char) {
                return invalid(
                    "--subprotocols",
                    format!("{protocol:?}: a subprotocol is one non-empty token (RFC 6455 4.1)"),
                );
            }
        }
        let timeouts = [
            ("--handshake-timeout", self.handshake_timeout, false),
            ("--message-timeout", self.message_timeout, true),
            ("--idle-timeout", self.idle_timeout, true),
            ("--ping-timeout", self.ping_timeout, false),
            ("--close-timeout", self.close_timeout, true),
            ("--shutdown-timeout", self.shutdown_timeout, true),
            ("--drain-window", self.drain_window, true),
        ];
        for (flag, timeout, zero_allowed) in timeouts {
            if timeout.is_zero() && !zero_allowed {
                return invalid(flag, "0: must be above zero".into());
            }
            if timeout > MAX_TIMEOUT {
                return invalid(
                    flag,
                    format!("{timeout:?}: must be at most {MAX_TIMEOUT:?}"),
                );
            }
        }
        if self.max_backpressure == 0 {
            return invalid("--max-backpressure", "0: must be at least 1 byte".into());
        }
        if self.inbox_capacity == 0 {
            return invalid("--inbox-capacity", "0: must be at least 1".into());
        }
        if !RECV_BUFFER_SIZE_RANGE.contains(&self.recv_buffer_size) {
            return invalid(
                "--recv-buffer-size",
                format!(
                    "{}: must be between {} and {} bytes",
                    self.recv_buffer_size,
                    RECV_BUFFER_SIZE_RANGE.start(),
                    RECV_BUFFER_SIZE_RANGE.end()
                ),
            );
        }
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > MAX_RECV_BUFFERS {
            return invalid(
                "--recv-buffers",
                format!(
                    "{}: must be a power of two, at most {MAX_RECV_BUFFERS}",
                    self.recv_buffers
                ),
            );
        }
        if let Some(publish) = &self.publish {
            if publish.max_body == 0 || publish.max_body > self.max_message_size {
                return invalid(
                    "--max-publish-body",
                    format!(
                        "{}: must be between 1 and --max-message-size ({} bytes)",
                        publish.max_body, self.max_message_size
                    ),
                );
            }
        }
        if self.max_subscriptions == 0 {
            return invalid("--max-subscriptions", "0: must be at least 1".into());
        }
        if let Some(metrics) = self.metrics_listen {
            if metrics.port() != 0 && metrics == SocketAddr::new(self.bind, self.port) {
                return invalid(
                    "--metrics-listen",
                    format!("{metrics} is the WebSocket address (--bind, --port)"),
                );
            }
        }
        self.validate_compression()?;
        for (i, url) in self.broker.iter().enumerate() {
            let password = self.broker_password.as_ref();
            let parsed = match crate::broker::RedisUrl::parse_with(url, password) {
                Ok(parsed) => parsed,
                // Never the URL itself: it may hold a password.
                Err(e) => {
                    return invalid(
                        "--broker",
                        format!("URL {} of {}: {e}", i + 1, self.broker.len()),
                    )
                }
            };
            if self.broker[..i].iter().any(|other| {
                crate::broker::RedisUrl::parse(other).is_ok_and(|o| o.addr == parsed.addr)
            }) {
                return invalid("--broker", format!("{} is given twice", parsed.addr));
            }
        }
        if self.broker_password.is_some() && self.broker.is_empty() {
            return invalid(
                "--broker-password-file",
                "given without --broker".to_string(),
            );
        }
        Ok(())
    }

    /// The parsed `--broker` URLs, or `None` without any (checked by [`ServerConfig::validate`]: one that
    /// does not parse is left out here).
    pub fn broker_urls(&self) -> Option<Vec<crate::broker::RedisUrl>> {
        let urls: Vec<_> = self
            .broker
            .iter()
            .filter_map(|url| {
                crate::broker::RedisUrl::parse_with(url, self.broker_password.as_ref()).ok()
            })
            .collect();
        (!urls.is_empty()).then_some(urls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config` with `change` applied must fail naming `flag`.
    fn refused(change: impl FnOnce(&mut ServerConfig), flag: &str) -> String {
        let mut config = ServerConfig::default();
        change(&mut config);
        let error = config.validate().expect_err(flag);
        assert_eq!(error.flag, flag, "{error}");
        error.to_string()
    }

    #[test]
    fn the_default_config_is_valid() {
        assert_eq!(ServerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn broker_urls_are_checked_without_showing_a_password() {
        let text = refused(
            |c| c.broker = vec!["redis://u:hunter2@h".into()],
            "--broker",
        );
        assert!(!text.contains("hunter2"), "{text}");
        refused(
            |c| c.broker = vec!["redis://h:1".into(), "redis://:p@h:1/2".into()],
            "--broker",
        );
        let config = ServerConfig {
            broker: vec!["redis://h:1".into(), "redis://h:2/1".into()],
            ..ServerConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
        let addrs: Vec<String> = config
            .broker_urls()
            .unwrap()
            .into_iter()
            .map(|u| u.addr)
            .collect();
        assert_eq!(addrs, ["h:1", "h:2"]);
        assert!(ServerConfig::default().broker_urls().is_none());
    }

    #[test]
    fn each_out_of_range_value_names_its_flag() {
        refused(|c| c.workers = 0, "--workers");
        refused(|c| c.max_message_size = 0, "--max-message-size");
        refused(|c| c.max_frame_size = 0, "--max-frame-size");
        let above = refused(
            |c| {
                c.max_message_size = 1000;
                c.max_frame_size = 1001;
            },
            "--max-frame-size",
        );
        assert!(above.contains("above --max-message-size"), "{above}");
        refused(
            |c| {
                c.max_frame_size = 1;
                c.max_message_size = c.max_assembly_memory + 1;
            },
            "--max-assembly-memory",
        );
        refused(|c| c.listen_backlog = 0, "--listen-backlog");
        refused(|c| c.listen_backlog = 1_000_001, "--listen-backlog");
        refused(|c| c.max_header_bytes = 0, "--max-header-bytes");
        refused(
            |c| c.max_pending_request_memory = c.max_header_bytes - 1,
            "--max-pending-request-memory",
        );
        refused(
            |c| c.allowed_origins = vec!["https://a.example".into(), String::new()],
            "--allowed-origins",
        );
        refused(
            |c| c.allowed_origins = vec![" https://a.example".into()],
            "--allowed-origins",
        );
        refused(
            |c| c.subprotocols = vec!["chat v2".into()],
            "--subprotocols",
        );
        refused(|c| c.subprotocols = vec![String::new()], "--subprotocols");
        refused(
            |c| c.handshake_timeout = Duration::ZERO,
            "--handshake-timeout",
        );
        refused(|c| c.ping_timeout = Duration::ZERO, "--ping-timeout");
        refused(
            |c| c.idle_timeout = MAX_TIMEOUT + Duration::from_millis(1),
            "--idle-timeout",
        );
        refused(
            |c| c.drain_window = MAX_TIMEOUT + Duration::from_millis(1),
            "--drain-window",
        );
        refused(|c| c.max_backpressure = 0, "--max-backpressure");
        refused(|c| c.inbox_capacity = 0, "--inbox-capacity");
        let zero = refused(|c| c.recv_buffer_size = 0, "--recv-buffer-size");
        assert!(zero.starts_with("--recv-buffer-size: 0: "), "{zero}");
        refused(|c| c.recv_buffer_size = 128 << 20, "--recv-buffer-size");
        refused(|c| c.recv_buffers = 3, "--recv-buffers");
        refused(|c| c.recv_buffers = 0, "--recv-buffers");
        refused(
            |c| {
                c.publish = Some(PublishConfig {
                    token: "t".into(),
                    max_body: 0,
                })
            },
            "--max-publish-body",
        );
        refused(|c| c.max_subscriptions = 0, "--max-subscriptions");
        refused(
            |c| c.metrics_listen = Some(SocketAddr::new(c.bind, c.port)),
            "--metrics-listen",
        );
    }

    #[test]
    fn documented_special_values_are_valid() {
        let config = ServerConfig {
            port: 0,
            message_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            close_timeout: Duration::ZERO,
            shutdown_timeout: Duration::ZERO,
            drain_window: Duration::ZERO,
            max_connections: 0,
            max_connections_per_worker: 0,
            subprotocols: vec!["chat".into(), "v2.json".into()],
            allowed_origins: vec!["https://a.example".into()],
            recv_buffers: MAX_RECV_BUFFERS,
            recv_buffer_size: *RECV_BUFFER_SIZE_RANGE.start(),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..ServerConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
    }
}
