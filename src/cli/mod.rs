//! The command line: `ringws serve [flags]`, parsed with clap and laid over the configuration file
//! (`--config`, [`config_file`]) into a [`ServerConfig`], logging setup (`--log-format text|json`), the
//! startup line and the `ringws listening on IP:PORT` line, and signal handling (SIGINT/SIGTERM start the
//! graceful shutdown; SIGHUP reloads the TLS certificate); the zero-downtime restart's two sides
//! (`--control-socket`, `--takeover`: [`crate::server::takeover`]); `ringws check-config [flags]` checks
//! the same configuration without serving.
//!
//! This module owns the process's stdout contract: `serve` prints exactly one line, once every worker
//! accepts, and nothing else; `check-config` prints the effective configuration (TOML) and nothing else.

pub mod config_file;

use std::fmt;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::app::{Broadcast, Echo, PubSub};
use crate::protocol::deflate::{DeflateConfig, DeflateMode};
use crate::reactor::sys::{self, ControlSignal};
use crate::server::admin::BindError;
use crate::server::config::{ConfigError, PublishConfig, SenderBudgetPolicy};
use crate::server::tls::TlsCertificate;
use crate::server::{
    takeover, Listen, ListenError, Server, ServerConfig, ServerHandle, SlowConsumerPolicy,
};

/// The environment variable that can hold the publish token (instead of `--publish-token`, which `ps`
/// shows).
pub const PUBLISH_TOKEN_ENV: &str = "RINGWS_PUBLISH_TOKEN";

#[derive(Parser, Debug)]
#[command(
    name = "ringws",
    version,
    about = "A WebSocket (RFC 6455) server on a thread-per-core io_uring reactor"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve WebSocket connections (and /healthz, /metrics, / over HTTP on the same port, /metrics on
    /// its own address with --metrics-listen; with --tls-cert/--tls-key, wss:// and https:// only).
    Serve(ServeArgs),
    /// Check a configuration (`serve`'s flags and --config) without serving; print the effective one.
    ///
    /// Checks every value, the TLS certificate and key and the publish token as `serve` does, without
    /// binding any address; prints the effective configuration as TOML (a valid --config file) on stdout
    /// and exits 0, or exits 2 with an error naming the flag, or the file, line and key.
    CheckConfig(ServeArgs),
}

/// The form of log lines on stderr.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level (`timestamp`, `level`, `target`,
    /// `message`, then e.g. `reason`, `status`).
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every message comes back to its sender.
    Echo,
    /// Every message goes to every connected client.
    Broadcast,
    /// Clients subscribe to topics and publish on them (protocol: docs/ARCHITECTURE.md, "Pub/sub").
    Pubsub,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumer {
    /// Close the slow connection with 1008.
    Close,
    /// Drop the message for the slow connection.
    Drop,
}

impl From<SlowConsumerPolicy> for SlowConsumer {
    fn from(policy: SlowConsumerPolicy) -> Self {
        match policy {
            SlowConsumerPolicy::Close => SlowConsumer::Close,
            SlowConsumerPolicy::Drop => SlowConsumer::Drop,
        }
    }
}

impl From<SlowConsumer> for SlowConsumerPolicy {
    fn from(choice: SlowConsumer) -> Self {
        match choice {
            SlowConsumer::Close => SlowConsumerPolicy::Close,
            SlowConsumer::Drop => SlowConsumerPolicy::Drop,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderBudget {
    /// Pause a sender over its fanout budget until its receivers drain.
    Pause,
    /// No fanout budget: only the slow-consumer policy.
    Off,
}

impl From<SenderBudgetPolicy> for SenderBudget {
    fn from(policy: SenderBudgetPolicy) -> Self {
        match policy {
            SenderBudgetPolicy::Pause => SenderBudget::Pause,
            SenderBudgetPolicy::Off => SenderBudget::Off,
        }
    }
}

impl From<SenderBudget> for SenderBudgetPolicy {
    fn from(choice: SenderBudget) -> Self {
        match choice {
            SenderBudget::Pause => SenderBudgetPolicy::Pause,
            SenderBudget::Off => SenderBudgetPolicy::Off,
        }
    }
}

/// [`ServerConfig::default()`], built once: the single source of every `serve` flag's default (and of the
/// `[default: ...]` that `--help` prints), so a default changed in `server/config.rs` changes the CLI too.
fn server_defaults() -> &'static ServerConfig {
    static DEFAULTS: OnceLock<ServerConfig> = OnceLock::new();
    DEFAULTS.get_or_init(ServerConfig::default)
}

/// Flags of `ringws serve`. Every flag that sets a [`ServerConfig`] field takes its default from
/// [`ServerConfig::default()`]; only `--mode`, which picks the handler, has its own.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A configuration file (TOML): one key per flag, named as the flag in snake_case
    /// (`max_message_size = "1MiB"`; see ringws.example.toml). Precedence: flags on the command line,
    /// then the environment (RINGWS_PUBLISH_TOKEN, RUST_LOG), then the file, then the defaults.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<std::path::PathBuf>,
    /// Log lines on stderr as text or as one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to log: a level (error, warn, info, debug, trace) or RUST_LOG-style directives
    /// (`info,ringws::server=debug`). RUST_LOG, when set, wins over the config file's log_level, never
    /// over this flag [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// What the server does with messages.
    #[arg(long, value_enum, default_value = "echo")]
    pub mode: Mode,
    /// Address to bind.
    #[arg(long, default_value_t = server_defaults().bind)]
    pub bind: IpAddr,
    /// TCP port (0 = an ephemeral port, the same for all workers).
    #[arg(long, default_value_t = server_defaults().port)]
    pub port: u16,
    /// Worker threads, one io_uring each [default: CPU count]. May exceed the CPU count (each ring holds
    /// up to the open-file limit of connections).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Do not pin worker threads to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Largest message (reassembled), e.g. 16MiB; larger -> close 1009. Bulk data belongs to HTTP.
    #[arg(long, default_value_t = ByteSize(server_defaults().max_message_size))]
    pub max_message_size: ByteSize,
    /// Largest single frame payload; larger -> close 1009 [default: --max-message-size].
    #[arg(long)]
    pub max_frame_size: Option<ByteSize>,
    /// Most memory one worker holds for messages still being assembled, over all its connections; the
    /// connection whose input would pass it is closed with 1013 (try again later).
    #[arg(long, default_value_t = ByteSize(server_defaults().max_assembly_memory))]
    pub max_assembly_memory: ByteSize,
    /// Time to finish a message once its first byte arrived; control frames do not extend it (0 = no
    /// deadline). Past it: close 1008.
    #[arg(long, default_value_t = HumanDuration(server_defaults().message_timeout))]
    pub message_timeout: HumanDuration,
    /// Most open WebSocket connections over all workers (0 = only the per-worker limit); beyond it,
    /// upgrades are answered 503.
    #[arg(long, default_value_t = server_defaults().max_connections)]
    pub max_connections: usize,
    /// Most connections per worker (its fixed-file table is this plus a small reserve used to answer 503)
    /// [default: the open-file limit minus the reserve].
    #[arg(long)]
    pub max_connections_per_worker: Option<usize>,
    /// Length of each worker's listen queue (connections the kernel holds before a worker accepts
    /// them; capped by net.core.somaxconn).
    #[arg(
        long,
        default_value_t = server_defaults().listen_backlog,
        value_parser = clap::value_parser!(u32).range(
            *crate::server::config::LISTEN_BACKLOG_RANGE.start() as i64
                ..=*crate::server::config::LISTEN_BACKLOG_RANGE.end() as i64
        )
    )]
    pub listen_backlog: u32,
    /// Largest HTTP request header block; larger -> 431.
    #[arg(long, default_value_t = ByteSize(server_defaults().max_header_bytes))]
    pub max_header_bytes: ByteSize,
    /// Most memory one worker holds for HTTP requests not yet complete (heads spanning receives,
    /// /publish bodies still arriving), over all its connections; a request that would pass it is
    /// answered 503 and closed.
    #[arg(long, default_value_t = ByteSize(server_defaults().max_pending_request_memory))]
    pub max_pending_request_memory: ByteSize,
    /// Comma-separated allowed Origin values (default: any); another origin -> 403.
    #[arg(long, value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Comma-separated subprotocols the server speaks, preferred first (default: none).
    #[arg(long, value_delimiter = ',')]
    pub subprotocols: Vec<String>,
    /// Time to finish the opening handshake (e.g. 10s, 500ms).
    #[arg(long, default_value_t = HumanDuration(server_defaults().handshake_timeout))]
    pub handshake_timeout: HumanDuration,
    /// Idle time before the server pings a connection (0 = never).
    #[arg(long, default_value_t = HumanDuration(server_defaults().idle_timeout))]
    pub idle_timeout: HumanDuration,
    /// Time to wait for any data after an idle ping before dropping the connection.
    #[arg(long, default_value_t = HumanDuration(server_defaults().ping_timeout))]
    pub ping_timeout: HumanDuration,
    /// Time to wait for the peer to finish a close handshake.
    #[arg(long, default_value_t = HumanDuration(server_defaults().close_timeout))]
    pub close_timeout: HumanDuration,
    /// On SIGINT/SIGTERM, time to wait for close replies before exiting.
    #[arg(long, default_value_t = HumanDuration(server_defaults().shutdown_timeout))]
    pub shutdown_timeout: HumanDuration,
    /// After handing the port over to a new process (its --takeover), the window over which the open
    /// connections are closed with 1001, one by one in a random order (0: all at once); the shutdown
    /// timeout follows it. SIGINT/SIGTERM do not drain: they close at once.
    #[arg(long, default_value_t = HumanDuration(server_defaults().drain_window))]
    pub drain_window: HumanDuration,
    /// Listen on this Unix socket for a new `ringws serve --takeover PATH`: it is handed this server's
    /// listening sockets, then this server stops accepting, drains (--drain-window) and exits 0
    /// [default: none].
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<std::path::PathBuf>,
    /// Take the port over from the running server whose --control-socket is PATH (zero-downtime
    /// restart): serve its listening sockets, then it drains. When no server answers on PATH, the port
    /// is bound as usual (a busy port still exits 2).
    #[arg(long, value_name = "PATH")]
    pub takeover: Option<std::path::PathBuf>,
    /// Bytes queued to one connection before backpressure applies (reads paused for its own replies; the
    /// slow-consumer policy for messages from others).
    #[arg(long, default_value_t = ByteSize(server_defaults().max_backpressure))]
    pub max_backpressure: ByteSize,
    /// What to do with a connection over --max-backpressure when others' messages are queued to it.
    #[arg(long, value_enum, default_value_t = server_defaults().slow_consumer.into())]
    pub slow_consumer: SlowConsumer,
    /// Messages each worker's inbox holds from other workers (broadcasts, publishes); past it a message is
    /// dropped for that worker and counted in ringws_handoff_drops_total.
    #[arg(
        long,
        default_value_t = server_defaults().inbox_capacity as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub inbox_capacity: u32,
    /// In broadcast mode, whether the sender gets its own message back.
    #[arg(
        long,
        default_value_t = server_defaults().broadcast_include_sender,
        action = clap::ArgAction::Set
    )]
    pub broadcast_include_sender: bool,
    /// The fanout budget of a broadcasting connection: whose broadcasts find most receivers of its worker
    /// over half of --max-backpressure. `pause`: its reads stop until they drain, at most 500 ms, after
    /// which the receivers still full are left to --slow-consumer (ringws_sender_pauses_total,
    /// ringws_slow_receivers_total).
    #[arg(long, value_enum, default_value_t = server_defaults().sender_budget.into())]
    pub sender_budget: SenderBudget,
    /// Turns `POST /publish` on, requiring `Authorization: Bearer TOKEN` (and, in pubsub mode, refuses
    /// WebSocket `pub` commands). Visible to every user in `ps`: prefer --publish-token-file or the
    /// RINGWS_PUBLISH_TOKEN environment variable. Without a token, /publish is off (404).
    #[arg(long, value_name = "TOKEN")]
    pub publish_token: Option<String>,
    /// Reads the publish token (see --publish-token) from this file, surrounding whitespace trimmed.
    #[arg(long, value_name = "PATH")]
    pub publish_token_file: Option<std::path::PathBuf>,
    /// Largest `POST /publish` body; larger -> 413. At most --max-message-size [default: 64KiB, or
    /// --max-message-size if smaller].
    #[arg(long)]
    pub max_publish_body: Option<ByteSize>,
    /// In echo mode, turn `POST /publish` on when a publish token is given (without this flag the route
    /// stays off in echo mode, token or not, so echo clients only ever get their own messages).
    #[arg(long)]
    pub publish_in_echo: bool,
    /// In pubsub mode, most topics one connection may subscribe to.
    #[arg(long, default_value_t = server_defaults().max_subscriptions)]
    pub max_subscriptions: usize,
    /// Pubsub mode: keep the last N publications of every topic, each with an offset and an epoch, for
    /// clients that recover after a reconnect and for history queries (docs/PROTOCOL.md). 0: off.
    #[arg(long, default_value_t = 0)]
    pub history_size: usize,
    /// How long a publication stays in history (with --history-size).
    #[arg(long, default_value_t = HumanDuration(Duration::from_secs(300)))]
    pub history_ttl: HumanDuration,
    /// Bytes all topics' history may hold together on this node (the oldest publication of the node goes
    /// first past it; ringws_history_bytes).
    #[arg(long, default_value_t = ByteSize(64 << 20))]
    pub history_max_bytes: ByteSize,
    /// Pubsub mode: keep who subscribes to each topic (user id and client info from the token), answer
    /// presence queries and send join/leave events to clients that ask (docs/PROTOCOL.md).
    #[arg(long)]
    pub presence: bool,
    /// With --broker and --presence: how long this node's members stay listed in Redis after its last
    /// refresh (every third of it); a node that dies drops out of presence within it.
    #[arg(long, default_value_t = HumanDuration(server_defaults().presence_ttl))]
    pub presence_ttl: HumanDuration,
    /// Pubsub mode: require a JWT at the upgrade (401 without a valid one; docs/PROTOCOL.md), HS256
    /// with this shared secret; its `channels` claim governs sub and pub. Visible to every user in `ps`:
    /// prefer --auth-jwt-secret-file or the RINGWS_AUTH_JWT_SECRET environment variable.
    #[arg(long, value_name = "SECRET")]
    pub auth_jwt_secret: Option<String>,
    /// Reads the HS256 secret (see --auth-jwt-secret) from this file, surrounding whitespace trimmed.
    #[arg(long, value_name = "PATH")]
    pub auth_jwt_secret_file: Option<std::path::PathBuf>,
    /// Pubsub mode: require a JWT at the upgrade, RS256 or ES256 with this PEM public key (RSA or EC
    /// P-256, `BEGIN PUBLIC KEY`); may be given with the HS256 secret (each token's `alg` picks).
    #[arg(long, value_name = "PATH")]
    pub auth_jwt_public_key: Option<std::path::PathBuf>,
    /// Serve GET /metrics and GET /healthz (plain HTTP, for operators) on this address of their own, e.g.
    /// 127.0.0.1:9100 (port 0: an ephemeral port, logged); /metrics on the WebSocket port then answers
    /// 404 [default: none, /metrics on the WebSocket port]. An address that cannot be bound stops startup
    /// (exit 2).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// Join other nodes through Redis pub/sub: redis://HOST:PORT, optionally with USER:PASS@ (or :PASS@)
    /// before the host and /DB after the port (repeatable: topics are spread over several). Redis down:
    /// local traffic goes on, /healthz answers 503. A password here is visible to every user in `ps`:
    /// prefer --broker-password-file (or the config file).
    #[arg(long, value_name = "URL")]
    pub broker: Vec<String>,
    /// Reads the Redis password from this file (one line, surrounding whitespace trimmed) for every
    /// --broker URL without a password of its own: redis://HOST:PORT authenticates with it, and
    /// redis://USER@HOST:PORT as USER.
    #[arg(long, value_name = "PATH")]
    pub broker_password_file: Option<std::path::PathBuf>,
    /// Size of each provided receive buffer.
    #[arg(long, default_value_t = ByteSize(server_defaults().recv_buffer_size))]
    pub recv_buffer_size: ByteSize,
    /// Receive buffers per worker (a power of two, at most 32768).
    #[arg(long, default_value_t = server_defaults().recv_buffers)]
    pub recv_buffers: u16,
    /// PEM certificate chain (leaf first): the listener then speaks TLS only (wss://, https://). Needs
    /// --tls-key (either may come from --config).
    #[arg(long, value_name = "CERT.pem")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of --tls-cert.
    #[arg(long, value_name = "KEY.pem")]
    pub tls_key: Option<std::path::PathBuf>,
    /// permessage-deflate: `on` answers a client's offer without context takeover in either direction (one
    /// compressor and inflater per worker, nothing per connection); `off` declines every offer; `context`
    /// keeps the server's compression context between messages (better ratios for similar messages; a
    /// compressor per connection, made at its first compressed message: about 15 KB at the defaults), the
    /// client still told not to keep its own.
    #[arg(long, value_enum, default_value_t = server_defaults().compression.mode.into())]
    pub compression: Compression,
    /// Messages shorter than this are sent uncompressed (compressing a short message costs more CPU than it
    /// saves bytes; under about 100 bytes JSON does not shrink).
    #[arg(long, default_value_t = ByteSize(server_defaults().compression.threshold))]
    pub compression_threshold: ByteSize,
    /// zlib compression level of sent messages: 0 (store) to 9 (best).
    #[arg(long, default_value_t = server_defaults().compression.level)]
    pub compression_level: u8,
    /// The largest window (bits, 9 to 15) of the server's compressor; a client may ask for less. Default:
    /// 15, or 11 with `--compression context` (a 2 KiB window per connection).
    #[arg(long)]
    pub compression_window_bits: Option<u8>,
    /// `--compression context`: zlib's memory level (1 to 9) of each connection's compressor. 1 (the
    /// default) keeps it small (15.4 KB at 11 bits: an 8 KiB hash table at level 8 alone would be 64 KiB)
    /// at a small cost in ratio.
    #[arg(long, default_value_t = server_defaults().compression.context_mem_level)]
    pub compression_mem_level: u8,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Off,
    On,
    Context,
}

impl From<DeflateMode> for Compression {
    fn from(mode: DeflateMode) -> Self {
        match mode {
            DeflateMode::Off => Compression::Off,
            DeflateMode::NoContext => Compression::On,
            DeflateMode::Context => Compression::Context,
        }
    }
}

impl ServeArgs {
    /// The `DeflateConfig` the compression flags give (checked by `ServerConfig::validate`).
    /// In context mode `--compression-window-bits` bounds both the per-connection and the per-worker
    /// compressor (the latter serves clients that ask for `server_no_context_takeover`, and broadcasts).
    pub fn compression_config(&self) -> DeflateConfig {
        let defaults = server_defaults().compression;
        let mode = match self.compression {
            Compression::Off => DeflateMode::Off,
            Compression::On => DeflateMode::NoContext,
            Compression::Context => DeflateMode::Context,
        };
        let window_bits = self.compression_window_bits.unwrap_or(match mode {
            DeflateMode::Context => defaults.context_window_bits,
            _ => defaults.max_window_bits,
        });
        DeflateConfig {
            mode,
            threshold: self.compression_threshold.0,
            level: self.compression_level,
            max_window_bits: window_bits,
            context_window_bits: match mode {
                DeflateMode::Context => window_bits,
                _ => defaults.context_window_bits,
            },
            context_mem_level: self.compression_mem_level,
        }
    }
}

/// Parses `1048576`, `64KiB`, `16MiB`, `1GiB` (also `k`/`KB`/`m`/`MB` as binary multiples).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: usize = digits
        .parse()
        .map_err(|_| format!("invalid size: {text}"))?;
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size unit in {text} (use B, KiB, MiB, GiB)"
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size too large: {text}"))
}

/// Parses `10s`, `500ms`, `2m`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration: {text}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(value),
        "ms" => Duration::from_millis(value),
        "m" | "min" => Duration::from_secs(
            value
                .checked_mul(60)
                .ok_or_else(|| format!("duration too large: {text}"))?,
        ),
        _ => return Err(format!("invalid duration unit in {text} (use ms, s, m)")),
    })
}

/// A byte count on the command line: read by [`parse_size`], printed in the largest binary unit that
/// divides it exactly (`16MiB`, `8KiB`, `1536`), so the printed form parses back to the same count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_size(text).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        let bytes = self.0;
        if bytes != 0 {
            for (unit_bytes, unit) in UNITS {
                if bytes.is_multiple_of(unit_bytes) {
                    return write!(f, "{}{unit}", bytes / unit_bytes);
                }
            }
        }
        write!(f, "{bytes}")
    }
}

/// A duration on the command line: read by [`parse_duration`], printed in whole seconds (`10s`) or else
/// whole milliseconds (`500ms`), forms that parse back to the same duration. (The command line cannot
/// give less than a millisecond; such a part prints rounded down.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}ms", self.0.as_millis())
        }
    }
}

/// A comma-separated list flag's entries with the spaces around each removed (`"a, b"` is `a` and `b`);
/// an entry left empty stays, for [`ServerConfig::validate`] to refuse.
fn trimmed(entries: &[String]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| entry.trim().to_string())
        .collect()
}

impl ServeArgs {
    /// The server configuration these flags give; a flag not given keeps its [`ServerConfig::default()`]
    /// value (`--max-frame-size` defaults to `--max-message-size`). `tls`, `publish` and `broker_password`
    /// stay `None`: [`serve`] loads them (files, environment), with [`ServeArgs::publish_config`] for
    /// `publish` and [`ServeArgs::broker_password`] for `broker_password`.
    pub fn to_config(&self) -> ServerConfig {
        let defaults = server_defaults();
        ServerConfig {
            bind: self.bind,
            port: self.port,
            workers: self.workers.unwrap_or(defaults.workers),
            pin_workers: defaults.pin_workers && !self.no_pin,
            max_message_size: self.max_message_size.0,
            max_frame_size: self.max_frame_size.unwrap_or(self.max_message_size).0 as u64,
            max_assembly_memory: self.max_assembly_memory.0,
            message_timeout: self.message_timeout.0,
            max_connections: self.max_connections,
            max_connections_per_worker: self
                .max_connections_per_worker
                .unwrap_or(defaults.max_connections_per_worker),
            listen_backlog: self.listen_backlog,
            max_header_bytes: self.max_header_bytes.0,
            max_pending_request_memory: self.max_pending_request_memory.0,
            allowed_origins: trimmed(&self.allowed_origins),
            subprotocols: trimmed(&self.subprotocols),
            handshake_timeout: self.handshake_timeout.0,
            idle_timeout: self.idle_timeout.0,
            ping_timeout: self.ping_timeout.0,
            close_timeout: self.close_timeout.0,
            shutdown_timeout: self.shutdown_timeout.0,
            drain_window: self.drain_window.0,
            max_backpressure: self.max_backpressure.0,
            slow_consumer: self.slow_consumer.into(),
            inbox_capacity: self.inbox_capacity as usize,
            recv_buffer_size: self.recv_buffer_size.0,
            recv_buffers: self.recv_buffers,
            broadcast_include_sender: self.broadcast_include_sender,
            sender_budget: self.sender_budget.into(),
            publish: None,
            max_subscriptions: self.max_subscriptions,
            history: (self.history_size > 0).then_some(crate::channels::HistoryConfig {
                size: self.history_size,
                ttl: self.history_ttl.0,
                max_bytes: self.history_max_bytes.0,
            }),
            presence: self.presence,
            presence_ttl: self.presence_ttl.0,
            metrics_listen: self.metrics_listen,
            broker: self.broker.clone(),
            broker_password: None,
            tls: None,
            compression: self.compression_config(),
        }
    }
}

impl ServeArgs {
    /// The `POST /publish` route these flags ask for, the token read from whichever one source gives it:
    /// `--publish-token`, `--publish-token-file` or `env_token` (the value of [`PUBLISH_TOKEN_ENV`]).
    /// `None` (the route off) without a token, and in echo mode without `--publish-in-echo`. An error (the
    /// message names the flag, file or variable) for two sources, an unreadable file, an empty token or one
    /// with whitespace inside, or `--max-publish-body` over `--max-message-size`.
    pub fn publish_config(
        &self,
        env_token: Option<std::ffi::OsString>,
    ) -> Result<Option<PublishConfig>, String> {
        let mut sources = Vec::new();
        if self.publish_token.is_some() {
            sources.push("--publish-token".to_string());
        }
        if self.publish_token_file.is_some() {
            sources.push("--publish-token-file".to_string());
        }
        if env_token.is_some() {
            sources.push(PUBLISH_TOKEN_ENV.to_string());
        }
        if sources.len() > 1 {
            return Err(format!(
                "the publish token is given by both {}: give it once",
                sources.join(" and ")
            ));
        }
        let max_message_size = self.max_message_size.0;
        let max_body = match self.max_publish_body {
            Some(ByteSize(max_body)) if max_body > max_message_size => {
                return Err(format!(
                    "--max-publish-body {} is over --max-message-size {}",
                    ByteSize(max_body),
                    ByteSize(max_message_size)
                ))
            }
            Some(ByteSize(max_body)) => max_body,
            None => PublishConfig::DEFAULT_MAX_BODY.min(max_message_size),
        };
        let (token, source) = if let Some(token) = &self.publish_token {
            (token.clone(), "--publish-token".to_string())
        } else if let Some(path) = &self.publish_token_file {
            let source = format!("--publish-token-file {}", path.display());
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{source}: cannot read the publish token: {e}"))?;
            (text, source)
        } else if let Some(value) = env_token {
            let token = value
                .into_string()
                .map_err(|_| format!("{PUBLISH_TOKEN_ENV} is not UTF-8"))?;
            (token, PUBLISH_TOKEN_ENV.to_string())
        } else {
            return Ok(None);
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(format!("{source}: the publish token is empty"));
        }
        if token.chars().any(char::is_whitespace) {
            return Err(format!(
                "{source}: the publish token contains whitespace (it must be one bearer token)"
            ));
        }
        if self.mode == Mode::Echo && !self.publish_in_echo {
            tracing::warn!(
                "a publish token is set but /publish stays off in echo mode (add --publish-in-echo)"
            );
            return Ok(None);
        }
        Ok(Some(PublishConfig {
            token: token.to_string(),
            max_body,
        }))
    }
}

impl ServeArgs {
    /// The Redis password of `--broker-password-file`, read now (`None` without the flag). The error
    /// names the flag and the file, never what the file holds.
    pub fn broker_password(&self) -> Result<Option<crate::broker::BrokerPassword>, String> {
        let Some(path) = &self.broker_password_file else {
            return Ok(None);
        };
        let source = format!("--broker-password-file {}", path.display());
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{source}: cannot read the Redis password: {e}"))?;
        crate::broker::BrokerPassword::from_file_text(&text)
            .map(Some)
            .ok_or_else(|| format!("{source}: expected one line holding the Redis password"))
    }
}

/// The environment variable that can hold the HS256 secret of `--auth-jwt-secret` (which `ps` shows).
pub const AUTH_JWT_SECRET_ENV: &str = "RINGWS_AUTH_JWT_SECRET";

impl ServeArgs {
    /// The JWT verifier these flags ask for (`None`: auth off): the HS256 secret from its one source
    /// (`--auth-jwt-secret`, `--auth-jwt-secret-file` or `env_secret`, the value of
    /// [`AUTH_JWT_SECRET_ENV`]) and/or `--auth-jwt-public-key`. An error (naming the flag, file or
    /// variable) for two secret sources, an unreadable file, an empty secret, a key that is not a PEM RSA
    /// or EC public key, or auth outside `--mode pubsub`.
    pub fn auth_config(
        &self,
        env_secret: Option<std::ffi::OsString>,
    ) -> Result<Option<std::sync::Arc<crate::app::Auth>>, String> {
        let mut sources = Vec::new();
        if self.auth_jwt_secret.is_some() {
            sources.push("--auth-jwt-secret");
        }
        if self.auth_jwt_secret_file.is_some() {
            sources.push("--auth-jwt-secret-file");
        }
        if env_secret.is_some() {
            sources.push(AUTH_JWT_SECRET_ENV);
        }
        if sources.len() > 1 {
            return Err(format!(
                "the JWT secret is given by both {}: give it once",
                sources.join(" and ")
            ));
        }
        let secret = if let Some(secret) = &self.auth_jwt_secret {
            Some((secret.clone(), "--auth-jwt-secret".to_string()))
        } else if let Some(path) = &self.auth_jwt_secret_file {
            let source = format!("--auth-jwt-secret-file {}", path.display());
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{source}: cannot read the JWT secret: {e}"))?;
            Some((text, source))
        } else if let Some(value) = env_secret {
            let secret = value
                .into_string()
                .map_err(|_| format!("{AUTH_JWT_SECRET_ENV} is not UTF-8"))?;
            Some((secret, AUTH_JWT_SECRET_ENV.to_string()))
        } else {
            None
        };
        let mut auth = match secret {
            Some((secret, source)) => {
                let secret = secret.trim();
                if secret.is_empty() {
                    return Err(format!("{source}: the JWT secret is empty"));
                }
                Some(crate::app::Auth::hs256(secret.as_bytes()))
            }
            None => None,
        };
        if let Some(path) = &self.auth_jwt_public_key {
            let source = format!("--auth-jwt-public-key {}", path.display());
            let pem = std::fs::read(path)
                .map_err(|e| format!("{source}: cannot read the public key: {e}"))?;
            let with_key = match auth.take() {
                Some(auth) => auth.with_public_key_pem(&pem),
                None => crate::app::Auth::public_key_pem(&pem),
            };
            auth = Some(with_key.map_err(|e| format!("{source}: {e}"))?);
        }
        if auth.is_some() && self.mode != Mode::Pubsub {
            return Err(
                "--auth-jwt-secret/--auth-jwt-public-key need --mode pubsub (tokens grant topics)"
                    .into(),
            );
        }
        Ok(auth.map(std::sync::Arc::new))
    }
}

/// The log filter and its directives, from the first of: `--log-level` on the command line, `RUST_LOG`,
/// `log_level` in the configuration file, `info`.
fn log_filter(
    args: &ServeArgs,
    on_command_line: impl Fn(&str) -> bool,
) -> Result<(tracing_subscriber::EnvFilter, String), String> {
    use tracing_subscriber::EnvFilter;
    let flag = args.log_level.as_deref();
    let rust_log = std::env::var("RUST_LOG").ok();
    let (directives, source) = match (flag, rust_log) {
        (Some(level), _) if on_command_line("log_level") => (level.to_string(), "--log-level"),
        (_, Some(env)) => (env, "RUST_LOG"),
        (Some(level), None) => (level.to_string(), "--log-level"),
        (None, None) => ("info".to_string(), "--log-level"),
    };
    match EnvFilter::try_new(&directives) {
        Ok(filter) => Ok((filter, directives)),
        Err(e) => Err(format!("{source}: {directives:?}: {e}")),
    }
}

/// Starts logging on stderr in `format` with `filter`.
fn init_logging(format: LogFormat, filter: tracing_subscriber::EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// Starts logging as `args` ask (format and level) and sets `args.log_level` to the directives in
/// effect; a bad level is reported once logging runs at `info`.
fn start_logging(
    args: &mut ServeArgs,
    on_command_line: impl Fn(&str) -> bool,
) -> Result<(), String> {
    match log_filter(args, on_command_line) {
        Ok((filter, directives)) => {
            init_logging(args.log_format, filter);
            args.log_level = Some(directives);
            Ok(())
        }
        Err(message) => {
            init_logging(args.log_format, tracing_subscriber::EnvFilter::new("info"));
            Err(message)
        }
    }
}

/// The keys a configuration file may hold: the ids of the `serve` flags (their names in snake_case),
/// `--config` itself excepted.
pub fn config_keys() -> Vec<String> {
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("the serve subcommand");
    serve
        .get_arguments()
        .map(|arg| arg.get_id().as_str().to_string())
        .filter(|id| id != "config" && id != "help")
        .collect()
}

/// `serve`'s and `check-config`'s configuration: `args` (the command line, `matches` saying which flags
/// it gave) over the `--config` file, the publish token from its one source, every value validated, the
/// TLS certificate and key loaded (kept, for SIGHUP to load them again). Starts logging (in the format the command line or the file asks for)
/// before anything can fail. The error (one line) names the flag, or the file, line and key.
fn configure(
    mut args: ServeArgs,
    matches: &ArgMatches,
) -> Result<(ServeArgs, ServerConfig, Option<TlsCertificate>), String> {
    let on_command_line = |key: &str| matches.value_source(key) == Some(ValueSource::CommandLine);
    let env_token = std::env::var_os(PUBLISH_TOKEN_ENV);
    let file = match &args.config {
        None => None,
        Some(path) => match config_file::LoadedFile::load(path, &config_keys()) {
            Ok(file) => {
                file.values
                    .apply(&mut args, on_command_line, env_token.is_some());
                Some(file)
            }
            Err(message) => {
                let _ = start_logging(&mut args, on_command_line);
                return Err(message);
            }
        },
    };
    start_logging(&mut args, on_command_line)?;
    // Where a value that failed came from: the flag, or the file's line.
    let explain = |error: ConfigError| match &file {
        Some(file) => file.explain(&error, on_command_line),
        None => error.to_string(),
    };
    let mut config = args.to_config();
    if args.max_connections_per_worker == Some(0) {
        return Err(explain(ConfigError {
            flag: "--max-connections-per-worker",
            message: "0: must be at least 1 (leave it out for the default)".into(),
        }));
    }
    config.publish = args.publish_config(env_token)?;
    config.broker_password = args.broker_password()?;
    if args.mode != Mode::Pubsub && (config.history.is_some() || config.presence) {
        let flag = if config.history.is_some() {
            "--history-size"
        } else {
            "--presence"
        };
        return Err(explain(ConfigError {
            flag,
            message: "needs --mode pubsub (history and presence belong to topics)".into(),
        }));
    }
    if args.mode == Mode::Pubsub && !config.subprotocols.iter().any(|p| p == crate::app::V1) {
        // The structured protocol (docs/PROTOCOL.md), after any the operator listed.
        config.subprotocols.push(crate::app::V1.to_string());
    }
    // Every value checked before anything is loaded or bound: exit 2 naming the flag.
    config.validate().map_err(explain)?;
    let mut certificate = None;
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let loaded = TlsCertificate::load(cert, key).map_err(|e| e.to_string())?;
            config.tls = Some(loaded.server_config());
            certificate = Some(loaded);
        }
        (Some(_), None) => {
            return Err(explain(ConfigError {
                flag: "--tls-cert",
                message: "--tls-key is required with it (both or neither)".into(),
            }))
        }
        (None, Some(_)) => {
            return Err(explain(ConfigError {
                flag: "--tls-key",
                message: "--tls-cert is required with it (both or neither)".into(),
            }))
        }
        (None, None) => {}
    }
    Ok((args, config, certificate))
}

/// Runs `ringws check-config`: the configuration `serve` would run, checked the same way (without binding
/// any address), printed as TOML on stdout. Returns the exit code: 0, or 2 for a bad configuration.
pub fn check_config(args: ServeArgs, matches: &ArgMatches) -> i32 {
    let (args, config, _certificate) = match configure(args, matches) {
        Ok(configured) => configured,
        Err(message) => {
            tracing::error!("{message}");
            return 2;
        }
    };
    if let Err(message) = args.auth_config(std::env::var_os(AUTH_JWT_SECRET_ENV)) {
        tracing::error!("{message}");
        return 2;
    }
    let mut text = String::from(
        "# The effective configuration of `ringws serve` with these flags (flags > environment > \
         --config file > defaults).\n",
    );
    if config.publish.is_some() {
        let source = if args.publish_token.is_some() {
            "--publish-token or the config file's publish_token"
        } else if args.publish_token_file.is_some() {
            "publish_token_file"
        } else {
            PUBLISH_TOKEN_ENV
        };
        text.push_str(&format!(
            "# POST /publish is on; the token (from {source}) is not printed.\n"
        ));
    }
    if !config.broker.is_empty() {
        text.push_str(
            "# Redis passwords (in a --broker URL or broker_password_file) are not printed.\n",
        );
    }
    text.push_str(&config_file::FileConfig::effective(&args, &config).to_toml());
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    0
}

/// Runs `ringws serve` until SIGINT/SIGTERM and the graceful shutdown complete. Returns the exit code.
pub fn serve(args: ServeArgs, matches: &ArgMatches) -> i32 {
    let (args, config, mut certificate) = match configure(args, matches) {
        Ok(configured) => configured,
        Err(message) => {
            tracing::error!("{message}");
            return 2;
        }
    };
    let auth = match args.auth_config(std::env::var_os(AUTH_JWT_SECRET_ENV)) {
        Ok(auth) => auth,
        Err(message) => {
            tracing::error!("{message}");
            return 2;
        }
    };
    if let Some(loaded) = &certificate {
        log_certificate("TLS certificate loaded", loaded);
    }
    // Block the control signals before any worker thread exists, so only this thread takes them.
    if let Err(e) = sys::block_control_signals() {
        tracing::error!("cannot block signals: {e}");
        return 1;
    }
    // A takeover's listeners, received before anything else: a failure here leaves the running server
    // as it was.
    let inherited = match &args.takeover {
        None => None,
        Some(path) => match takeover::take_over(path) {
            Ok(Some(inherited)) => Some(inherited.into_parts()),
            Ok(None) => {
                tracing::info!(
                    path = %path.display(),
                    "--takeover: no server answers there; binding the port"
                );
                None
            }
            Err(e) => {
                tracing::error!("cannot take over: {e}");
                return if e.is_usage() { 2 } else { 1 };
            }
        },
    };
    let taken_over = inherited.is_some();
    let (listen, handover) = match inherited {
        Some((listeners, handover)) => (Listen::Inherit(listeners), Some(handover)),
        None => (Listen::Bind, None),
    };
    let mode = args.mode;
    let include_sender = config.broadcast_include_sender;
    let started = match mode {
        Mode::Echo => Server::start_with(config, listen, |_| Echo),
        Mode::Broadcast => {
            Server::start_with(config, listen, move |_| Broadcast { include_sender })
        }
        Mode::Pubsub => {
            let max_subscriptions = config.max_subscriptions;
            let publish_needs_token = config.publish.is_some();
            Server::start_with(config, listen, move |_| {
                let pubsub =
                    PubSub::new(max_subscriptions).with_publish_needs_token(publish_needs_token);
                match &auth {
                    Some(auth) => pubsub.with_auth(std::sync::Arc::clone(auth)),
                    None => pubsub,
                }
            })
        }
    };
    let mut server: ServerHandle = match started {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            // An address that cannot be bound (a busy port) is a usage error, like a bad flag; so are
            // listeners handed over that these flags cannot serve.
            let usage = e.get_ref().is_some_and(|inner| {
                inner.is::<BindError>()
                    || inner.is::<ListenError>()
                    || inner
                        .downcast_ref::<takeover::TakeoverError>()
                        .is_some_and(takeover::TakeoverError::is_usage)
            });
            if let Some(path) = args.takeover.as_ref().filter(|_| !taken_over) {
                tracing::error!(
                    "nothing answered on --takeover {}: a server to take over must run with \
                     --control-socket at that path",
                    path.display()
                );
            }
            return if usage { 2 } else { 1 };
        }
    };
    if let Some(handover) = handover {
        // Every worker accepts on the listeners now: the old server may stop.
        if let Err(e) = handover.confirm() {
            tracing::error!("{e}; stopping");
            server.shutdown();
            server.join();
            return 1;
        }
        tracing::info!("took the port over; the previous server drains its connections");
        // The previous server's accepts are cancelled: take what their wakeups left in the queues.
        server.rearm_accepts();
        // The previous server released the operators' address before it confirmed.
        if let Err(e) = server.listen_metrics(Duration::from_secs(5)) {
            tracing::error!(
                "cannot serve --metrics-listen after the takeover, serving without it: {e}"
            );
        }
    }
    // Bound before the `listening` line, so that a takeover may follow it at once.
    let control = match args
        .control_socket
        .as_deref()
        .map(takeover::ControlSocket::bind)
    {
        None => None,
        Some(Ok(control)) => Some(control),
        Some(Err(e)) => {
            tracing::error!("{e}");
            server.shutdown();
            server.join();
            return if e.is_usage() { 2 } else { 1 };
        }
    };
    let c = server.config();
    // The effective configuration, every value after defaults (one line).
    tracing::info!(
        address = %server.local_addr(),
        workers = c.workers,
        pin_workers = c.pin_workers,
        mode = ?mode,
        scheme = if c.tls.is_some() { "wss" } else { "ws" },
        max_message_size = c.max_message_size,
        max_frame_size = c.max_frame_size,
        max_assembly_memory = c.max_assembly_memory,
        message_timeout = ?c.message_timeout,
        max_connections = c.max_connections,
        max_connections_per_worker = c.effective_connections_per_worker(),
        listen_backlog = c.listen_backlog,
        max_header_bytes = c.max_header_bytes,
        max_pending_request_memory = c.max_pending_request_memory,
        handshake_timeout = ?c.handshake_timeout,
        idle_timeout = ?c.idle_timeout,
        ping_timeout = ?c.ping_timeout,
        close_timeout = ?c.close_timeout,
        shutdown_timeout = ?c.shutdown_timeout,
        drain_window = ?c.drain_window,
        control_socket = ?args.control_socket,
        taken_over = taken_over,
        max_backpressure = c.max_backpressure,
        slow_consumer = ?c.slow_consumer,
        inbox_capacity = c.inbox_capacity,
        recv_buffer_size = c.recv_buffer_size,
        recv_buffers = c.recv_buffers,
        allowed_origins = ?c.allowed_origins,
        subprotocols = ?c.subprotocols,
        broadcast_include_sender = c.broadcast_include_sender,
        max_subscriptions = c.max_subscriptions,
        publish = ?c.publish, // the token redacted
        metrics_listen = ?c.metrics_listen,
        compression = ?c.compression,
        // Addresses only: a URL may hold a password.
        broker = ?c.broker_urls().unwrap_or_default().iter().map(|u| &u.addr).collect::<Vec<_>>(),
        broker_password_file = ?args.broker_password_file,
        config_file = ?args.config,
        ring = server.ring_setup(),
        "ringws started"
    );
    if let Some(addr) = server.metrics_addr() {
        // The one place the operators' port is told (port 0 resolved); stdout keeps its one line.
        tracing::info!("metrics listening on {addr} (GET /metrics, GET /healthz)");
    }
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "ringws listening on {}", server.local_addr());
        let _ = stdout.flush();
    }
    run_until_stopped(server, certificate.as_mut(), control)
}

/// What the main thread of `serve` waits for.
enum ServeEvent {
    Signal(ControlSignal),
    /// A new process took the listeners over (`--control-socket`); answered once this server has stopped
    /// accepting and released its operators' address.
    HandedOver(std::sync::mpsc::Sender<()>),
}

/// The signal loop: SIGHUP reloads the certificate; SIGINT/SIGTERM shut down; a handover on the control
/// socket starts the drain. Returns the exit code once every worker has finished.
fn run_until_stopped(
    mut server: ServerHandle,
    mut certificate: Option<&mut TlsCertificate>,
    control: Option<takeover::ControlSocket>,
) -> i32 {
    let (events, received) = std::sync::mpsc::channel::<ServeEvent>();
    let signals = events.clone();
    let spawned = std::thread::Builder::new()
        .name("ringws-signals".into())
        .spawn(move || {
            while signals
                .send(ServeEvent::Signal(sys::wait_control_signal()))
                .is_ok()
            {}
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the signal thread: {e}");
        server.shutdown();
        server.join();
        return 1;
    }
    let mut control_path = None;
    let mut control_thread = None;
    if let Some(control) = control {
        let path = control.path();
        let events = events.clone();
        let served = control.serve(server.handover_listeners(), move || {
            let (done, finished) = std::sync::mpsc::channel();
            if events.send(ServeEvent::HandedOver(done)).is_ok() {
                let _ = finished.recv_timeout(Duration::from_secs(10));
            }
        });
        match served {
            Ok(thread) => control_thread = Some(thread),
            Err(e) => {
                tracing::error!("cannot start the control socket's thread: {e}");
                server.shutdown();
                server.join();
                path.remove_if_ours();
                return 1;
            }
        }
        tracing::info!(
            path = %path.display(),
            "control socket listening (`ringws serve --takeover` with this path takes the port over)"
        );
        control_path = Some(path);
    }
    let mut stopping = false;
    let mut handed_over = false;
    while !(stopping && server.is_finished()) {
        match received.recv_timeout(Duration::from_millis(50)) {
            Ok(ServeEvent::Signal(ControlSignal::Reload)) => {
                reload_certificate(certificate.as_deref_mut())
            }
            Ok(ServeEvent::Signal(ControlSignal::Terminate(signal))) => {
                // Also during a drain: what is left is closed at once.
                tracing::info!(signal, "shutting down");
                server.shutdown();
                stopping = true;
            }
            Ok(ServeEvent::HandedOver(done)) => {
                tracing::info!(
                    window = ?server.config().drain_window,
                    "handed over to a new process: draining"
                );
                server.hand_over();
                let _ = done.send(());
                stopping = true;
                handed_over = true;
            }
            Err(_) => {}
        }
    }
    server.join();
    if handed_over {
        // It tells the new process that the handover is complete, then ends.
        if let Some(thread) = control_thread {
            let _ = thread.join();
        }
    } else if let Some(path) = control_path {
        path.remove_if_ours();
    }
    tracing::info!("stopped");
    0
}

/// One line naming the certificate in use: files, subject and expiry (when the leaf parses as X.509).
fn log_certificate(what: &str, certificate: &TlsCertificate) {
    let summary = certificate.summary();
    tracing::info!(
        cert = %certificate.cert_path().display(),
        key = %certificate.key_path().display(),
        subject = summary.subject.as_deref().unwrap_or("unknown"),
        not_after = summary.not_after.as_deref().unwrap_or("unknown"),
        "{what}"
    );
}

/// SIGHUP: loads the TLS certificate and key again from their files. New handshakes present the new
/// certificate; open connections keep theirs. A failure keeps the certificate in use, is logged naming
/// the file and counted, and never ends the process.
fn reload_certificate(certificate: Option<&mut TlsCertificate>) {
    let Some(certificate) = certificate else {
        tracing::info!("SIGHUP: nothing to reload (no --tls-cert)");
        return;
    };
    match certificate.reload() {
        Ok(_) => log_certificate("SIGHUP: TLS certificate reloaded", certificate),
        Err(e) => tracing::error!(
            file = %e.file.display(),
            "SIGHUP: TLS certificate not reloaded, the one in use stays: {e}"
        ),
    }
}

/// Entry point of the `ringws` binary.
pub fn main() -> i32 {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let (_, sub_matches) = matches.subcommand().expect("a subcommand is required");
    match cli.command {
        Command::Serve(args) => serve(args, sub_matches),
        Command::CheckConfig(args) => check_config(args, sub_matches),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("8KiB"), Ok(8192));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("12XB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("1h").is_err());
    }

    #[test]
    fn sizes_and_durations_print_as_they_parse() {
        assert_eq!(ByteSize(16 << 20).to_string(), "16MiB");
        assert_eq!(ByteSize(8192).to_string(), "8KiB");
        assert_eq!(ByteSize(3 << 30).to_string(), "3GiB");
        assert_eq!(ByteSize(1536).to_string(), "1536");
        assert_eq!(ByteSize(0).to_string(), "0");
        assert_eq!(HumanDuration(Duration::from_secs(10)).to_string(), "10s");
        assert_eq!(
            HumanDuration(Duration::from_millis(500)).to_string(),
            "500ms"
        );
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(HumanDuration(Duration::ZERO).to_string(), "0s");

        let defaults = ServerConfig::default();
        let default_sizes = [
            defaults.max_message_size,
            usize::try_from(defaults.max_frame_size).unwrap(),
            defaults.max_assembly_memory,
            defaults.max_header_bytes,
            defaults.max_pending_request_memory,
            defaults.max_backpressure,
            defaults.recv_buffer_size,
        ];
        for bytes in default_sizes
            .into_iter()
            .chain([0, 1, 1023, 1024, 1536, 3 << 20])
        {
            let text = ByteSize(bytes).to_string();
            assert_eq!(text.parse(), Ok(ByteSize(bytes)), "{text}");
        }
        let default_durations = [
            defaults.handshake_timeout,
            defaults.message_timeout,
            defaults.idle_timeout,
            defaults.ping_timeout,
            defaults.close_timeout,
            defaults.shutdown_timeout,
        ];
        let other_durations = [0, 1, 500, 1500, 120_000].map(Duration::from_millis);
        for duration in default_durations.into_iter().chain(other_durations) {
            let text = HumanDuration(duration).to_string();
            assert_eq!(text.parse(), Ok(HumanDuration(duration)), "{text}");
        }
    }

    #[test]
    fn listen_backlog_flag_reaches_the_config() {
        let serve = |args: &[&str]| {
            let argv = ["ringws", "serve"].iter().chain(args).copied();
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Serve(serve) | Command::CheckConfig(serve) => {
                    serve.to_config().listen_backlog
                }
            })
        };
        assert_eq!(serve(&[]).unwrap(), 4096);
        assert_eq!(serve(&["--listen-backlog", "17"]).unwrap(), 17);
        assert!(serve(&["--listen-backlog", "0"]).is_err());
        assert!(serve(&["--listen-backlog", "-3"]).is_err());
    }

    #[test]
    fn metrics_listen_takes_an_address_and_port() {
        let parsed = serve_args(&["--metrics-listen", "127.0.0.1:9100"]).to_config();
        assert_eq!(
            parsed.metrics_listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        let argv = ["ringws", "serve", "--metrics-listen", "localhost"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn the_sender_budget_pauses_by_default_and_can_be_turned_off() {
        assert_eq!(
            serve_args(&[]).to_config().sender_budget,
            SenderBudgetPolicy::Pause
        );
        let off = serve_args(&["--sender-budget", "off"]).to_config();
        assert_eq!(off.sender_budget, SenderBudgetPolicy::Off);
        let argv = ["ringws", "serve", "--sender-budget", "true"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn inbox_capacity_is_at_least_one() {
        let serve = |args: &[&str]| {
            let argv = ["ringws", "serve"].iter().chain(args).copied();
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Serve(serve) | Command::CheckConfig(serve) => {
                    serve.to_config().inbox_capacity
                }
            })
        };
        assert_eq!(serve(&["--inbox-capacity", "64"]).unwrap(), 64);
        assert!(serve(&["--inbox-capacity", "0"]).is_err());
    }

    /// `ringws serve` with no flags must run exactly the documented [`ServerConfig::default()`]. The
    /// destructuring names every field, so a new config field does not compile until it is checked here.
    #[test]
    fn no_flags_give_the_default_config() {
        let ServerConfig {
            bind,
            port,
            workers: _, // computed: the CPU count at startup
            pin_workers,
            max_message_size,
            max_frame_size,
            max_assembly_memory,
            message_timeout,
            max_connections,
            max_connections_per_worker,
            listen_backlog,
            max_header_bytes,
            max_pending_request_memory,
            allowed_origins,
            subprotocols,
            handshake_timeout,
            idle_timeout,
            ping_timeout,
            close_timeout,
            shutdown_timeout,
            max_backpressure,
            slow_consumer,
            inbox_capacity,
            recv_buffer_size,
            recv_buffers,
            broadcast_include_sender,
            sender_budget,
            publish,
            max_subscriptions,
            metrics_listen,
            drain_window,
            broker,
            broker_password,
            tls: _, // built from --tls-cert/--tls-key in `serve`, never by `to_config`
            compression,
            history,
            presence,
            presence_ttl,
        } = ServerConfig::default();
        let args = serve_args(&[]);
        let parsed = args.to_config();
        assert_eq!(parsed.history, history);
        assert_eq!(parsed.presence, presence);
        assert_eq!(parsed.presence_ttl, presence_ttl);
        assert_eq!(args.publish_config(None), Ok(publish.clone()));
        assert_eq!(parsed.bind, bind);
        assert_eq!(parsed.port, port);
        assert_eq!(parsed.pin_workers, pin_workers);
        assert_eq!(parsed.max_message_size, max_message_size);
        assert_eq!(parsed.max_frame_size, max_frame_size);
        assert_eq!(parsed.max_assembly_memory, max_assembly_memory);
        assert_eq!(parsed.message_timeout, message_timeout);
        assert_eq!(parsed.max_connections, max_connections);
        assert_eq!(
            parsed.max_connections_per_worker,
            max_connections_per_worker
        );
        assert_eq!(parsed.listen_backlog, listen_backlog);
        assert_eq!(parsed.max_header_bytes, max_header_bytes);
        assert_eq!(
            parsed.max_pending_request_memory,
            max_pending_request_memory
        );
        assert_eq!(parsed.allowed_origins, allowed_origins);
        assert_eq!(parsed.broker, broker);
        assert_eq!(parsed.broker_password, broker_password);
        assert_eq!(parsed.subprotocols, subprotocols);
        assert_eq!(parsed.handshake_timeout, handshake_timeout);
        assert_eq!(parsed.idle_timeout, idle_timeout);
        assert_eq!(parsed.ping_timeout, ping_timeout);
        assert_eq!(parsed.close_timeout, close_timeout);
        assert_eq!(parsed.shutdown_timeout, shutdown_timeout);
        assert_eq!(parsed.drain_window, drain_window);
        assert_eq!(parsed.max_backpressure, max_backpressure);
        assert_eq!(parsed.slow_consumer, slow_consumer);
        assert_eq!(parsed.inbox_capacity, inbox_capacity);
        assert_eq!(parsed.recv_buffer_size, recv_buffer_size);
        assert_eq!(parsed.recv_buffers, recv_buffers);
        assert_eq!(parsed.broadcast_include_sender, broadcast_include_sender);
        assert_eq!(parsed.sender_budget, sender_budget);
        assert_eq!(parsed.publish, publish);
        assert_eq!(parsed.max_subscriptions, max_subscriptions);
        assert_eq!(parsed.metrics_listen, metrics_listen);
        assert_eq!(parsed.compression, compression);
        assert!(parsed.tls.is_none());
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        let argv = ["ringws", "serve"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(serve) | Command::CheckConfig(serve) => serve,
        }
    }

    #[test]
    fn the_publish_token_comes_from_one_source() {
        let dir = std::env::temp_dir().join(format!("ringws-publish-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  from-file \n").unwrap();
        let file = file.to_str().unwrap();
        let pubsub = ["--mode", "pubsub"];
        let token = |args: &[&str], env: Option<&str>| {
            let args = serve_args(&[&pubsub[..], args].concat());
            args.publish_config(env.map(Into::into))
                .map(|publish| publish.map(|p| (p.token, p.max_body)))
        };
        assert_eq!(token(&[], None), Ok(None));
        assert_eq!(
            token(&["--publish-token-file", file], None),
            Ok(Some(("from-file".into(), 64 << 10)))
        );
        assert_eq!(
            token(&[], Some(" from-env ")),
            Ok(Some(("from-env".into(), 64 << 10)))
        );
        assert_eq!(
            token(
                &["--publish-token", "argv", "--max-publish-body", "1KiB"],
                None
            ),
            Ok(Some(("argv".into(), 1024)))
        );
        // Below the default body limit, the largest message bounds it.
        assert_eq!(
            token(
                &["--publish-token", "argv", "--max-message-size", "1000"],
                None
            ),
            Ok(Some(("argv".into(), 1000)))
        );
        let error = |args: &[&str], env: Option<&str>| token(args, env).unwrap_err();
        let both = error(
            &["--publish-token", "a", "--publish-token-file", file],
            None,
        );
        assert!(
            both.contains("--publish-token and --publish-token-file"),
            "{both}"
        );
        let both = error(&["--publish-token-file", file], Some("b"));
        assert!(
            both.contains("--publish-token-file and RINGWS_PUBLISH_TOKEN"),
            "{both}"
        );
        let missing = dir.join("missing");
        let missing = missing.to_str().unwrap();
        let unreadable = error(&["--publish-token-file", missing], None);
        assert!(unreadable.contains(missing), "{unreadable}");
        std::fs::write(dir.join("empty"), " \n").unwrap();
        let empty = dir.join("empty");
        let empty = error(&["--publish-token-file", empty.to_str().unwrap()], None);
        assert!(
            empty.contains("--publish-token-file") && empty.contains("empty"),
            "{empty}"
        );
        assert!(error(&[], Some("")).contains("RINGWS_PUBLISH_TOKEN"));
        assert!(error(&["--publish-token", "two words"], None).contains("whitespace"));
        let over = error(
            &[
                "--publish-token",
                "t",
                "--max-message-size",
                "1KiB",
                "--max-publish-body",
                "2KiB",
            ],
            None,
        );
        assert!(over.contains("--max-publish-body"), "{over}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn publish_stays_off_in_echo_mode_unless_asked() {
        let publish = |args: &[&str]| serve_args(args).publish_config(None).unwrap();
        assert_eq!(publish(&["--publish-token", "t"]), None);
        assert_eq!(publish(&["--mode", "echo", "--publish-token", "t"]), None);
        assert_eq!(
            publish(&["--publish-token", "t", "--publish-in-echo"]),
            Some(PublishConfig::new("t"))
        );
        assert_eq!(
            publish(&["--mode", "broadcast", "--publish-token", "t"]),
            Some(PublishConfig::new("t"))
        );
    }

    /// `ringws serve ARGS` parsed as `main` does: the arguments and which flags the command line gave.
    fn serve_with_matches(args: &[&str]) -> (ServeArgs, ArgMatches) {
        let argv = ["ringws", "serve"].iter().chain(args).copied();
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let serve = match Cli::from_arg_matches(&matches).unwrap().command {
            Command::Serve(serve) | Command::CheckConfig(serve) => serve,
        };
        let sub = matches.subcommand().unwrap().1.clone();
        (serve, sub)
    }

    #[test]
    fn every_serve_flag_is_a_config_file_key() {
        let (mut args, _) = serve_with_matches(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--publish-token-file",
            "t",
            "--metrics-listen",
            "127.0.0.1:9100",
            "--mode",
            "pubsub",
            "--log-level",
            "debug",
            "--control-socket",
            "/run/ringws/control.sock",
            "--takeover",
            "/run/ringws/control.sock",
            "--broker",
            "redis://h:1",
            "--broker-password-file",
            "/run/ringws/redis.password",
            "--auth-jwt-secret-file",
            "jwt.secret",
            "--auth-jwt-public-key",
            "jwt.pem",
        ]);
        args.publish_token = None;
        let mut config = args.to_config();
        config.publish = Some(PublishConfig::new("t"));
        let printed = config_file::FileConfig::effective(&args, &config).to_toml();
        let table: toml::Table = printed.parse().unwrap();
        let mut keys: Vec<String> = table.keys().cloned().collect();
        // Never printed (a secret), but read.
        keys.push("publish_token".into());
        keys.push("auth_jwt_secret".into());
        keys.sort();
        let mut flags = config_keys();
        flags.sort();
        assert_eq!(keys, flags);
    }

    #[test]
    fn the_printed_configuration_reads_back_as_a_file() {
        let (args, _) = serve_with_matches(&[
            "--max-message-size",
            "64KiB",
            "--handshake-timeout",
            "1500ms",
            "--allowed-origins",
            "https://a.example, https://b.example",
            "--log-format",
            "json",
        ]);
        let effective = config_file::FileConfig::effective(&args, &args.to_config());
        let path = std::path::Path::new("printed.toml");
        let read = config_file::LoadedFile::parse(path, &effective.to_toml(), &config_keys())
            .unwrap()
            .values;
        assert_eq!(read, effective);
    }

    #[test]
    fn flags_on_the_command_line_win_over_the_file() {
        let text = "max_message_size = \"64KiB\"\nidle_timeout = \"7s\"\nno_pin = true\n\
                    subprotocols = [\"chat\"]\npublish_token = \"from-file\"\nmode = \"broadcast\"\n";
        let file =
            config_file::LoadedFile::parse(std::path::Path::new("f.toml"), text, &config_keys())
                .unwrap();
        let (mut args, matches) =
            serve_with_matches(&["--idle-timeout", "9s", "--subprotocols", "v2"]);
        let on_command_line =
            |key: &str| matches.value_source(key) == Some(ValueSource::CommandLine);
        file.values.apply(&mut args, on_command_line, false);
        let config = args.to_config();
        assert_eq!(config.max_message_size, 64 << 10, "from the file");
        assert_eq!(config.max_frame_size, 64 << 10, "follows the message size");
        assert!(!config.pin_workers, "from the file");
        assert_eq!(config.idle_timeout, Duration::from_secs(9), "the flag wins");
        assert_eq!(config.subprotocols, ["v2"], "the flag wins");
        assert_eq!(
            args.publish_config(None).unwrap().unwrap().token,
            "from-file"
        );

        // The environment's token wins over the file's.
        let (mut args, matches) = serve_with_matches(&[]);
        let on_command_line =
            |key: &str| matches.value_source(key) == Some(ValueSource::CommandLine);
        file.values.apply(&mut args, on_command_line, true);
        assert_eq!(
            args.publish_config(Some("from-env".into()))
                .unwrap()
                .unwrap()
                .token,
            "from-env"
        );
        // A flag given with its default value still wins.
        let (mut args, matches) = serve_with_matches(&["--max-message-size", "1MiB"]);
        let on_command_line =
            |key: &str| matches.value_source(key) == Some(ValueSource::CommandLine);
        file.values.apply(&mut args, on_command_line, false);
        assert_eq!(args.to_config().max_message_size, 1 << 20);
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
