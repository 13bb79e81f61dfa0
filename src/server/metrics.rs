//! Per-worker counters and their Prometheus text rendering.
//!
//! Each worker owns one [`WorkerMetrics`] and is its only writer: a counter update is a relaxed load and
//! store (no read-modify-write, no lock), readable from any thread for `/metrics`. Nothing here logs or
//! allocates on the hot path; rendering allocates, but only for a `/metrics` request.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use super::http::publish::PUBLISH_REFUSALS;

/// A counter with a single writer thread.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(n),
            Ordering::Relaxed,
        );
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-worker counters of the channels layer (history, recovery, presence).
#[derive(Default)]
pub struct ChannelMetrics {
    /// Subscriptions that asked to recover: `[recovered, not recovered]`.
    pub recoveries: [Counter; 2],
    /// Publications this worker read back from the history because one of their successors arrived first
    /// (another worker published between; normal, cheap).
    pub catch_ups: Counter,
    /// Publications this worker's subscribers never got: gone from the history before the worker caught
    /// up (only after a handoff drop).
    pub delivery_gaps: Counter,
    /// History queries answered.
    pub history_queries: Counter,
    /// Join and leave events published.
    pub presence_events: Counter,
}

impl ChannelMetrics {
    fn render(workers: &[std::sync::Arc<WorkerMetrics>], out: &mut String) {
        let sum = |f: fn(&ChannelMetrics) -> &Counter| -> u64 {
            workers.iter().map(|w| f(&w.channels).get()).sum()
        };
        let _ = writeln!(
            out,
            "# HELP ringws_recoveries_total Subscriptions that asked to recover missed publications, by result\n\
             # TYPE ringws_recoveries_total counter\n\
             ringws_recoveries_total{{result=\"recovered\"}} {}\n\
             ringws_recoveries_total{{result=\"not_recovered\"}} {}",
            sum(|c| &c.recoveries[0]),
            sum(|c| &c.recoveries[1]),
        );
        for (name, help, f) in [
            (
                "ringws_history_catch_ups_total",
                "Publications a worker read back from the history to deliver them in offset order",
                (|c| &c.catch_ups) as fn(&ChannelMetrics) -> &Counter,
            ),
            (
                "ringws_history_delivery_gaps_total",
                "Publications a worker could not deliver: gone from the history before it caught up",
                |c| &c.delivery_gaps,
            ),
            (
                "ringws_history_queries_total",
                "History queries answered",
                |c| &c.history_queries,
            ),
            (
                "ringws_presence_events_total",
                "Presence join and leave events published",
                |c| &c.presence_events,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                sum(f)
            );
        }
        use std::sync::atomic::Ordering::Relaxed;
        let gauge_or_counter =
            |out: &mut String, (name, kind, help, value): (&str, &str, &str, u64)| {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
                );
            };
        if let Some(history) = workers.first().and_then(|w| w.history.as_ref()) {
            let s = &history.stats;
            for family in [
                (
                    "ringws_history_topics",
                    "gauge",
                    "Topics with a history log on this node",
                    s.topics.load(Relaxed),
                ),
                (
                    "ringws_history_entries",
                    "gauge",
                    "Publications kept in history",
                    s.entries.load(Relaxed),
                ),
                (
                    "ringws_history_bytes",
                    "gauge",
                    "Bytes counted against --history-max-bytes",
                    s.bytes.load(Relaxed),
                ),
                (
                    "ringws_history_appended_total",
                    "counter",
                    "Publications given an offset and kept",
                    s.appended.load(Relaxed),
                ),
            ] {
                gauge_or_counter(out, family);
            }
            let _ = writeln!(
                out,
                "# HELP ringws_history_evicted_total Publications dropped from history, by bound\n\
                 # TYPE ringws_history_evicted_total counter\n\
                 ringws_history_evicted_total{{bound=\"size\"}} {}\n\
                 ringws_history_evicted_total{{bound=\"ttl\"}} {}\n\
                 ringws_history_evicted_total{{bound=\"bytes\"}} {}",
                s.evicted_size.load(Relaxed),
                s.evicted_ttl.load(Relaxed),
                s.evicted_bytes.load(Relaxed),
            );
        }
        if let Some(presence) = workers.first().and_then(|w| w.presence.as_ref()) {
            let s = &presence.stats;
            for family in [
                (
                    "ringws_presence_topics",
                    "gauge",
                    "Topics with members on this node",
                    s.topics.load(Relaxed),
                ),
                (
                    "ringws_presence_members",
                    "gauge",
                    "Subscriptions listed in presence",
                    s.members.load(Relaxed),
                ),
                (
                    "ringws_presence_joins_total",
                    "counter",
                    "Presence joins",
                    s.joins.load(Relaxed),
                ),
                (
                    "ringws_presence_leaves_total",
                    "counter",
                    "Presence leaves",
                    s.leaves.load(Relaxed),
                ),
            ] {
                gauge_or_counter(out, family);
            }
        }
    }
}

/// A counter any thread may add to (an atomic add): for events counted on behalf of a worker by other
/// threads, off the hot path.
#[derive(Default)]
pub struct SharedCounter(AtomicU64);

impl SharedCounter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a connection was refused before or at the upgrade.
pub const REJECT_REASONS: [&str; 4] = [
    "table_full",
    "max_connections",
    "shutting_down",
    "request_memory",
];
pub const REJECT_TABLE_FULL: usize = 0;
pub const REJECT_MAX_CONNECTIONS: usize = 1;
pub const REJECT_SHUTTING_DOWN: usize = 2;
/// A request not yet complete whose bytes would take the worker over `--max-pending-request-memory`
/// (answered 503).
pub const REJECT_REQUEST_MEMORY: usize = 3;

/// Why an opening handshake failed: the `reason` label of `ringws_handshake_failures_total`, one name per
/// cause (a plain HTTP request answered 404 or 405 is not a failed handshake: it counts in
/// `ringws_http_requests_total` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// A request that is not valid HTTP/1.1 or lacks a WebSocket header (400).
    BadRequest = 0,
    /// `Origin` not allowed (403).
    Origin,
    /// An upgrade with a method other than GET (405).
    Method,
    /// An expectation other than `100-continue` (417).
    Expectation,
    /// No `Upgrade: websocket` where only WebSocket is served (426).
    UpgradeRequired,
    /// `Sec-WebSocket-Version` missing or not 13 (426).
    Version,
    /// The request head over `--max-header-bytes` or too many header lines (431).
    HeadersTooLarge,
    /// A resource that does not exist (404).
    NotFound,
    /// The handshake not finished within `--handshake-timeout`.
    Timeout,
    /// Refused by the handler's `on_upgrade` (its status).
    Handler,
}

/// The labels of [`HandshakeFailure`], in its order.
pub const HANDSHAKE_FAILURES: [&str; 10] = [
    "bad_request",
    "origin",
    "method",
    "expectation",
    "upgrade_required",
    "version",
    "headers_too_large",
    "not_found",
    "timeout",
    "handler",
];

impl HandshakeFailure {
    /// Its metrics label (and the `reason` of its log line).
    pub fn label(self) -> &'static str {
        HANDSHAKE_FAILURES[self as usize]
    }
}

impl From<&crate::protocol::handshake::HandshakeError> for HandshakeFailure {
    fn from(error: &crate::protocol::handshake::HandshakeError) -> Self {
        use crate::protocol::handshake::HandshakeError as E;
        match error {
            E::BadRequest(_) | E::NotHttp11 | E::MissingHost | E::LengthAndTransferEncoding => {
                HandshakeFailure::BadRequest
            }
            E::OriginNotAllowed => HandshakeFailure::Origin,
            E::MethodNotAllowed => HandshakeFailure::Method,
            E::UpgradeRequired => HandshakeFailure::UpgradeRequired,
            E::VersionNotSupported => HandshakeFailure::Version,
            E::HeadersTooLarge => HandshakeFailure::HeadersTooLarge,
            E::NotFound => HandshakeFailure::NotFound,
        }
    }
}

/// Close codes counted individually; everything else is `other`.
pub const CLOSE_CODES: [u16; 11] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1013,
];

/// One family of counters by close code, read from a worker's metrics.
type CloseCounters = fn(&WorkerMetrics) -> &[Counter];

/// The index of `code` in [`CLOSE_CODES`], or the last one ("other").
fn close_code_index(code: u16) -> usize {
    CLOSE_CODES
        .iter()
        .position(|&c| c == code)
        .unwrap_or(CLOSE_CODES.len())
}

#[derive(Default)]
pub struct WorkerMetrics {
    /// TCP connections currently held (any state).
    pub connections_open: Counter,
    /// TCP connections accepted since start.
    pub connections_total: Counter,
    /// WebSocket connections currently open.
    pub websockets_open: Counter,
    /// Successful upgrades since start.
    pub websockets_total: Counter,
    /// Plain HTTP requests answered.
    pub http_requests: Counter,
    pub rejected: [Counter; REJECT_REASONS.len()],
    pub handshake_failures: [Counter; HANDSHAKE_FAILURES.len()],
    pub messages_in: Counter,
    pub bytes_in: Counter,
    pub messages_out: Counter,
    pub bytes_out: Counter,
    /// Closes by code (received from the peer, or 1006 for a connection lost without a close).
    pub closes: [Counter; CLOSE_CODES.len() + 1],
    /// Close handshakes the server started, by the code it sent (protocol errors, limits, policies,
    /// shutdown); replies to a peer's close are not counted here.
    pub closes_sent: [Counter; CLOSE_CODES.len() + 1],
    /// Times a connection's reads were paused because its send queue exceeded the cap.
    pub backpressure_pauses: Counter,
    /// Times a broadcasting connection's reads were paused because its fanout was over budget.
    pub sender_pauses: Counter,
    /// Times a connection assembling a message of 256 KiB or more went from a multishot receive to one
    /// receive buffer per turn of its worker.
    pub receives_limited: Counter,
    /// Receivers that did not drain within a sender's pause, no longer counted against senders' fanout
    /// until they drain.
    pub slow_receivers: Counter,
    pub slow_consumer_closes: Counter,
    pub slow_consumer_drops: Counter,
    /// Event streams (`GET /sse`) opened since start (also counted in `websockets_open`/`_total`, whose
    /// capacity they share).
    pub event_streams_total: Counter,
    /// Bytes an event-stream client sent after its request, discarded (an event stream is receive-only).
    pub event_stream_input_discarded: Counter,
    /// Keep-alive comments sent to idle event streams (in place of a ping).
    pub event_stream_keepalives: Counter,
    /// Accept errors (ENFILE, EMFILE, ENOBUFS...), which stop the multishot accept until slots free.
    pub accept_errors: Counter,
    /// Multishot receives ended because the provided buffer ring ran dry (re-armed, no data lost).
    pub recv_buffers_exhausted: Counter,
    /// Broadcast frames encoded (once per message, shared by every recipient).
    pub frames_encoded: Counter,
    /// Batches of shared frames handed to another worker.
    pub handoffs: Counter,
    /// Shared frames queued to connections.
    pub deliveries: Counter,
    /// Messages for this worker dropped because its inbox was full (counted by their senders: other
    /// workers and `ServerHandle::publish`).
    pub handoff_drops: SharedCounter,
    /// Doorbells (`MSG_RING`) this worker rang that failed; each is retried once at the next batch end,
    /// and the receiving worker's tick drains its inbox anyway.
    pub doorbell_failures: Counter,
    /// Periodic ticks re-armed after the kernel ended the multishot timeout (a full completion queue).
    pub tick_rearms: Counter,
    /// Connections closed 1013 because their input would take the worker over `--max-assembly-memory`.
    pub assembly_budget_closes: Counter,
    /// Connections closed 1008 because a message started and was not finished within `--message-timeout`.
    pub message_timeouts: Counter,
    /// TLS handshakes completed (`--tls-cert`).
    pub tls_handshakes: Counter,
    /// TLS connections ended by a TLS error (bad record, garbage, plain HTTP, handshake failure).
    pub tls_failures: Counter,
    /// TLS connections whose client closed after its first flight before the server did any handshake
    /// work for it (it can never finish the handshake: it has not seen the server's reply).
    pub tls_abandoned: Counter,
    /// TLS connections closed unanswered because their worker's backlog of first flights waiting for
    /// handshake work was full (`worker::tls_io::FIRST_FLIGHT_BACKLOG_BYTES`).
    pub tls_backlog_refusals: Counter,
    /// `POST /publish` requests refused (the route being on), by [`PUBLISH_REFUSALS`] reason.
    pub publish_refusals: [Counter; PUBLISH_REFUSALS.len()],
    /// Gauge: heap capacity held for HTTP requests not yet complete (heads and `/publish` bodies kept
    /// across receives), kept under `--max-pending-request-memory`.
    pub request_memory: Counter,
    /// permessage-deflate: bytes before and after, messages compressed, inflate failures, inflaters held.
    pub deflate: DeflateMetrics,
    /// JWT authentication (`--auth-jwt-*`): refused upgrades, refused commands, expired connections.
    pub auth: AuthMetrics,
    /// History and recovery, counted by the worker that does the work.
    pub channels: ChannelMetrics,
    /// The node's broker link (`--broker`), the same for every worker: rendered once, from the first.
    pub broker: Option<std::sync::Arc<crate::broker::BrokerStatus>>,
    /// The node's history and presence stores (`--history-size`, `--presence`), the same for every
    /// worker: rendered once, from the first.
    pub history: Option<std::sync::Arc<crate::channels::History<super::SharedMessage>>>,
    pub presence: Option<std::sync::Arc<crate::channels::Presence>>,
}

/// `ringws_deflate_bytes_total{direction,stage}` labels, in the order of [`DeflateMetrics::bytes`]: what
/// arrived compressed and what it inflated to; what was compressed and what it compressed to.
pub const DEFLATE_BYTES: [(&str, &str); 4] = [
    ("in", "compressed"),
    ("in", "inflated"),
    ("out", "plain"),
    ("out", "compressed"),
];
pub const DEFLATE_IN_COMPRESSED: usize = 0;
pub const DEFLATE_IN_INFLATED: usize = 1;
pub const DEFLATE_OUT_PLAIN: usize = 2;
pub const DEFLATE_OUT_COMPRESSED: usize = 3;

/// Why an upgrade was refused for its token (`--auth-jwt-*`, `app::auth`): the `reason` label of
/// `ringws_auth_failures_total`, and the one-line body of the 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header and no `?token=`.
    Missing = 0,
    /// Not a JWT (segments, base64, JSON header), or an `Authorization` header that is not `Bearer <jwt>`.
    Malformed,
    /// The signature does not verify with the configured key.
    BadSignature,
    /// An `alg` no configured key verifies (`none` included).
    WrongAlgorithm,
    /// `exp` has passed.
    Expired,
    /// `nbf` is still ahead.
    NotYetValid,
    /// Signed, but `sub`, `exp` or `channels` missing or of the wrong form.
    Claims,
}

/// The labels of [`AuthFailure`], in its order.
pub const AUTH_FAILURES: [&str; 7] = [
    "missing",
    "malformed",
    "bad_signature",
    "wrong_algorithm",
    "expired",
    "not_yet_valid",
    "claims",
];

/// The `op` labels of `ringws_auth_denials_total`: commands refused by the token's `channels`.
pub const AUTH_DENIALS: [&str; 2] = ["sub", "pub"];
pub const AUTH_DENIED_SUB: usize = 0;
pub const AUTH_DENIED_PUB: usize = 1;

impl AuthFailure {
    /// Its metrics label.
    pub fn label(self) -> &'static str {
        AUTH_FAILURES[self as usize]
    }

    /// The one-line body of its 401 (docs/PROTOCOL.md, "Refusals").
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => {
                "missing token: send Authorization: Bearer <jwt> or ?token=<jwt>"
            }
            AuthFailure::Malformed => "malformed token",
            AuthFailure::BadSignature => "bad token signature",
            AuthFailure::WrongAlgorithm => "token algorithm not accepted",
            AuthFailure::Expired => "token expired",
            AuthFailure::NotYetValid => "token not yet valid (nbf)",
            AuthFailure::Claims => {
                "token claims invalid: needs sub (string), exp (number), channels patterns"
            }
        }
    }
}

/// The authentication counters of one worker (all zero without `--auth-jwt-*`).
#[derive(Default)]
pub struct AuthMetrics {
    /// Upgrades refused 401, by [`AuthFailure`].
    pub failures: [Counter; AUTH_FAILURES.len()],
    /// `sub`/`pub` commands refused by the token's `channels`, by [`AUTH_DENIALS`].
    pub denials: [Counter; AUTH_DENIALS.len()],
    /// Connections closed 4001 because their token's `exp` passed.
    pub expired_closes: Counter,
}

impl AuthMetrics {
    pub fn failure(&self, failure: AuthFailure) {
        self.failures[failure as usize].inc();
    }

    fn render(workers: &[std::sync::Arc<WorkerMetrics>], out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP ringws_auth_failures_total Upgrades refused 401 for their token, by reason\n# TYPE ringws_auth_failures_total counter"
        );
        for (i, m) in workers.iter().enumerate() {
            for (r, reason) in AUTH_FAILURES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ringws_auth_failures_total{{worker=\"{i}\",reason=\"{reason}\"}} {}",
                    m.auth.failures[r].get()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP ringws_auth_denials_total Commands refused by the token's channels, by op\n# TYPE ringws_auth_denials_total counter"
        );
        for (i, m) in workers.iter().enumerate() {
            for (r, op) in AUTH_DENIALS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ringws_auth_denials_total{{worker=\"{i}\",op=\"{op}\"}} {}",
                    m.auth.denials[r].get()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP ringws_auth_expired_closes_total Connections closed 4001: their token expired\n# TYPE ringws_auth_expired_closes_total counter"
        );
        for (i, m) in workers.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringws_auth_expired_closes_total{{worker=\"{i}\"}} {}",
                m.auth.expired_closes.get()
            );
        }
    }
}

/// `ringws_inflate_failures_total{kind}`: a message over `--max-message-size` once inflated (1009), a
/// corrupt stream (1007).
pub const INFLATE_FAILURES: [&str; 2] = ["too_big", "corrupt"];
pub const INFLATE_TOO_BIG: usize = 0;
pub const INFLATE_CORRUPT: usize = 1;

/// The permessage-deflate counters of one worker.
#[derive(Default)]
pub struct DeflateMetrics {
    /// By [`DEFLATE_BYTES`] label.
    pub bytes: [Counter; DEFLATE_BYTES.len()],
    /// Messages received compressed and sent compressed.
    pub messages_in: Counter,
    pub messages_out: Counter,
    /// Messages at or above the threshold sent plain because compression did not shrink them.
    pub not_smaller: Counter,
    /// Shared frames (broadcast, publish) compressed: once per message, whatever the receivers.
    pub frames_compressed: Counter,
    /// By [`INFLATE_FAILURES`] kind.
    pub inflate_failures: [Counter; INFLATE_FAILURES.len()],
    /// Gauge: inflaters held by connections whose compressed message spans receives (each counts
    /// `INFLATER_STATE_BYTES` against `--max-assembly-memory`).
    pub inflaters_held: Counter,
    /// Gauge: compressors owned by context-takeover connections (`--compression context`), each made at
    /// its connection's first compressed message and freed with the connection.
    pub context_compressors: Counter,
}

fn render_deflate(out: &mut String, workers: &[std::sync::Arc<WorkerMetrics>]) {
    let _ = writeln!(
        out,
        "# HELP ringws_deflate_bytes_total permessage-deflate payload bytes: in (compressed, inflated), out (plain, compressed)\n# TYPE ringws_deflate_bytes_total counter"
    );
    for (i, m) in workers.iter().enumerate() {
        for (b, (direction, stage)) in DEFLATE_BYTES.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringws_deflate_bytes_total{{worker=\"{i}\",direction=\"{direction}\",stage=\"{stage}\"}} {}",
                m.deflate.bytes[b].get()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringws_deflate_messages_total Messages received or sent compressed\n# TYPE ringws_deflate_messages_total counter"
    );
    for (i, m) in workers.iter().enumerate() {
        for (direction, counter) in [
            ("in", &m.deflate.messages_in),
            ("out", &m.deflate.messages_out),
        ] {
            let _ = writeln!(
                out,
                "ringws_deflate_messages_total{{worker=\"{i}\",direction=\"{direction}\"}} {}",
                counter.get()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringws_frames_compressed_total Shared frames compressed for fanout (once per message)\n# TYPE ringws_frames_compressed_total counter"
    );
    for (i, m) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringws_frames_compressed_total{{worker=\"{i}\"}} {}",
            m.deflate.frames_compressed.get()
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringws_deflate_not_smaller_total Messages over the threshold sent plain: compression did not shrink them\n# TYPE ringws_deflate_not_smaller_total counter"
    );
    for (i, m) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringws_deflate_not_smaller_total{{worker=\"{i}\"}} {}",
            m.deflate.not_smaller.get()
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringws_inflate_failures_total Compressed messages refused: too_big (1009), corrupt (1007)\n# TYPE ringws_inflate_failures_total counter"
    );
    for (i, m) in workers.iter().enumerate() {
        for (k, kind) in INFLATE_FAILURES.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringws_inflate_failures_total{{worker=\"{i}\",kind=\"{kind}\"}} {}",
                m.deflate.inflate_failures[k].get()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringws_inflaters_held Inflaters held by compressed messages spanning receives\n# TYPE ringws_inflaters_held gauge"
    );
    for (i, m) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringws_inflaters_held{{worker=\"{i}\"}} {}",
            m.deflate.inflaters_held.get()
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringws_deflate_context_compressors Compressors owned by context-takeover connections\n# TYPE ringws_deflate_context_compressors gauge"
    );
    for (i, m) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringws_deflate_context_compressors{{worker=\"{i}\"}} {}",
            m.deflate.context_compressors.get()
        );
    }
}

/// `/healthz` (both listeners): `Err(reason)` while the node is not whole (a `--broker` link down).
pub fn health(workers: &[std::sync::Arc<WorkerMetrics>]) -> Result<(), String> {
    match workers.first().and_then(|w| w.broker.as_ref()) {
        Some(broker) => broker.down_reason().map_or(Ok(()), Err),
        None => Ok(()),
    }
}

impl WorkerMetrics {
    pub fn close_code(&self, code: u16) {
        self.closes[close_code_index(code)].inc();
    }

    /// A close handshake the server started with `code`.
    pub fn close_sent(&self, code: u16) {
        self.closes_sent[close_code_index(code)].inc();
    }

    pub fn handshake_failure(&self, reason: HandshakeFailure) {
        self.handshake_failures[reason as usize].inc();
    }

    pub fn handshake_timeout(&self) {
        self.handshake_failure(HandshakeFailure::Timeout);
    }

    /// An upgrade refused by the handler's `on_upgrade`.
    pub fn handshake_refused_by_handler(&self) {
        self.handshake_failure(HandshakeFailure::Handler);
    }
}

/// Name, Prometheus type, help text and accessor of one per-worker counter.
type CounterSpec = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerMetrics) -> &Counter,
);

/// Renders every worker's counters as Prometheus text exposition.
pub fn render_prometheus(workers: &[std::sync::Arc<WorkerMetrics>]) -> String {
    let mut out = String::with_capacity(4096);
    let simple: [CounterSpec; 31] = [
        (
            "ringws_tls_abandoned_total",
            "counter",
            "TLS connections closed by their client after its first flight, before any handshake work",
            |m| &m.tls_abandoned,
        ),
        (
            "ringws_tls_backlog_refusals_total",
            "counter",
            "TLS connections closed unanswered: the backlog of first flights waiting for handshake work was full",
            |m| &m.tls_backlog_refusals,
        ),
        (
            "ringws_tls_handshakes_total",
            "counter",
            "TLS handshakes completed",
            |m| &m.tls_handshakes,
        ),
        (
            "ringws_tls_handshake_failures_total",
            "counter",
            "TLS connections ended by a TLS error (handshake failure, bad record, not TLS)",
            |m| &m.tls_failures,
        ),
        (
            "ringws_connections_open",
            "gauge",
            "TCP connections held",
            |m| &m.connections_open,
        ),
        (
            "ringws_connections_total",
            "counter",
            "TCP connections accepted",
            |m| &m.connections_total,
        ),
        (
            "ringws_websockets_open",
            "gauge",
            "WebSocket connections open",
            |m| &m.websockets_open,
        ),
        (
            "ringws_websockets_total",
            "counter",
            "WebSocket upgrades",
            |m| &m.websockets_total,
        ),
        (
            "ringws_http_requests_total",
            "counter",
            "Plain HTTP requests answered",
            |m| &m.http_requests,
        ),
        (
            "ringws_messages_in_total",
            "counter",
            "Messages received",
            |m| &m.messages_in,
        ),
        (
            "ringws_bytes_in_total",
            "counter",
            "Message payload bytes received",
            |m| &m.bytes_in,
        ),
        (
            "ringws_messages_out_total",
            "counter",
            "Messages queued for sending",
            |m| &m.messages_out,
        ),
        (
            "ringws_bytes_out_total",
            "counter",
            "Message payload bytes queued for sending",
            |m| &m.bytes_out,
        ),
        (
            "ringws_backpressure_events_total",
            "counter",
            "Reads paused by a full send queue",
            |m| &m.backpressure_pauses,
        ),
        (
            "ringws_receives_limited_total",
            "counter",
            "Connections assembling a large message moved to one receive buffer per worker turn",
            |m| &m.receives_limited,
        ),
        (
            "ringws_sender_pauses_total",
            "counter",
            "Reads of a broadcasting connection paused by its fanout over budget",
            |m| &m.sender_pauses,
        ),
        (
            "ringws_slow_receivers_total",
            "counter",
            "Receivers that did not drain within a sender's pause, left to the slow-consumer policy",
            |m| &m.slow_receivers,
        ),
        (
            "ringws_slow_consumer_closes_total",
            "counter",
            "Slow consumers closed with 1008",
            |m| &m.slow_consumer_closes,
        ),
        (
            "ringws_slow_consumer_drops_total",
            "counter",
            "Messages dropped for slow consumers",
            |m| &m.slow_consumer_drops,
        ),
        (
            "ringws_event_streams_total",
            "counter",
            "Event streams (GET /sse) opened",
            |m| &m.event_streams_total,
        ),
        (
            "ringws_event_stream_input_discarded_bytes_total",
            "counter",
            "Bytes sent by event-stream clients after their request, discarded",
            |m| &m.event_stream_input_discarded,
        ),
        (
            "ringws_event_stream_keepalives_total",
            "counter",
            "Keep-alive comments sent to idle event streams",
            |m| &m.event_stream_keepalives,
        ),
        (
            "ringws_accept_errors_total",
            "counter",
            "Accept failures (table full, ENOBUFS...)",
            |m| &m.accept_errors,
        ),
        (
            "ringws_recv_buffers_exhausted_total",
            "counter",
            "Receives re-armed after the buffer ring ran dry",
            |m| &m.recv_buffers_exhausted,
        ),
        (
            "ringws_tick_rearms_total",
            "counter",
            "Periodic ticks re-armed after the kernel ended them (full completion queue)",
            |m| &m.tick_rearms,
        ),
        (
            "ringws_doorbell_failures_total",
            "counter",
            "Doorbells (MSG_RING) to other workers that failed (retried once; ticks drain inboxes)",
            |m| &m.doorbell_failures,
        ),
        (
            "ringws_assembly_budget_closes_total",
            "counter",
            "Connections closed 1013: their message would take the worker over --max-assembly-memory",
            |m| &m.assembly_budget_closes,
        ),
        (
            "ringws_request_memory_bytes",
            "gauge",
            "Heap held for HTTP requests not yet complete (heads, /publish bodies); see --max-pending-request-memory",
            |m| &m.request_memory,
        ),
        (
            "ringws_message_timeouts_total",
            "counter",
            "Connections closed 1008: a message not finished within --message-timeout",
            |m| &m.message_timeouts,
        ),
        (
            "ringws_frames_encoded_total",
            "counter",
            "Shared frames encoded for fanout",
            |m| &m.frames_encoded,
        ),
        (
            "ringws_deliveries_total",
            "counter",
            "Shared frames queued to connections",
            |m| &m.deliveries,
        ),
    ];
    for (name, kind, help, get) in simple {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (i, m) in workers.iter().enumerate() {
            let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", get(m).get());
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringws_handoffs_total Batches of shared frames handed to other workers\n# TYPE ringws_handoffs_total counter"
    );
    for (i, m) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringws_handoffs_total{{worker=\"{i}\"}} {}",
            m.handoffs.get()
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringws_handoff_drops_total Messages for a worker dropped because its inbox was full\n# TYPE ringws_handoff_drops_total counter"
    );
    for (i, m) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringws_handoff_drops_total{{worker=\"{i}\"}} {}",
            m.handoff_drops.get()
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringws_rejected_total Connections refused\n# TYPE ringws_rejected_total counter"
    );
    for (i, m) in workers.iter().enumerate() {
        for (r, reason) in REJECT_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringws_rejected_total{{worker=\"{i}\",reason=\"{reason}\"}} {}",
                m.rejected[r].get()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringws_handshake_failures_total Failed opening handshakes\n# TYPE ringws_handshake_failures_total counter"
    );
    for (i, m) in workers.iter().enumerate() {
        for (r, reason) in HANDSHAKE_FAILURES.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringws_handshake_failures_total{{worker=\"{i}\",reason=\"{reason}\"}} {}",
                m.handshake_failures[r].get()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringws_publish_refusals_total POST /publish requests refused, by reason\n# TYPE ringws_publish_refusals_total counter"
    );
    for (i, m) in workers.iter().enumerate() {
        for (r, reason) in PUBLISH_REFUSALS.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringws_publish_refusals_total{{worker=\"{i}\",reason=\"{reason}\"}} {}",
                m.publish_refusals[r].get()
            );
        }
    }
    AuthMetrics::render(workers, &mut out);
    TLS_CERTIFICATE.render(&mut out);
    if let Some(broker) = workers.first().and_then(|w| w.broker.as_ref()) {
        broker.render(&mut out);
    }
    ChannelMetrics::render(workers, &mut out);
    let families: [(&str, &str, CloseCounters); 2] = [
        (
            "ringws_closes_total",
            "Connections closed, by close code",
            |m| &m.closes,
        ),
        (
            "ringws_server_closes_total",
            "Close handshakes the server started, by the code it sent",
            |m| &m.closes_sent,
        ),
    ];
    for (name, help, counters) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, m) in workers.iter().enumerate() {
            for (c, counter) in counters(m).iter().enumerate() {
                let code = CLOSE_CODES
                    .get(c)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "other".to_string());
                let _ = writeln!(
                    out,
                    "{name}{{worker=\"{i}\",code=\"{code}\"}} {}",
                    counter.get()
                );
            }
        }
    }
    render_deflate(&mut out, workers);
    out
}

/// Results of a certificate reload (`ringws_tls_reloads_total{result}`).
pub const TLS_RELOAD_RESULTS: [&str; 2] = ["ok", "error"];

/// The TLS certificate's metrics: process-wide, not per worker (the certificate is loaded and reloaded
/// by the main thread, off every worker's path). Rendered only once a certificate has been loaded in
/// this process; a process serving two TLS servers from the library shows the last certificate loaded.
pub struct TlsCertificateMetrics {
    /// A certificate has been loaded: the TLS families are rendered.
    loaded: AtomicBool,
    /// The certificate in use's notAfter (seconds since the Unix epoch); 0 while unknown.
    not_after: AtomicU64,
    /// Reloads by [`TLS_RELOAD_RESULTS`].
    reloads: [SharedCounter; TLS_RELOAD_RESULTS.len()],
}

/// The process's TLS certificate metrics, written by `server::tls` when it loads a certificate.
pub static TLS_CERTIFICATE: TlsCertificateMetrics = TlsCertificateMetrics {
    loaded: AtomicBool::new(false),
    not_after: AtomicU64::new(0),
    reloads: [
        SharedCounter(AtomicU64::new(0)),
        SharedCounter(AtomicU64::new(0)),
    ],
};

impl TlsCertificateMetrics {
    /// A certificate was loaded (at startup); its expiry if known.
    pub fn loaded(&self, not_after_unix: Option<u64>) {
        self.not_after
            .store(not_after_unix.unwrap_or(0), Ordering::Relaxed);
        self.loaded.store(true, Ordering::Relaxed);
    }

    /// A reload replaced the certificate.
    pub fn reloaded(&self, not_after_unix: Option<u64>) {
        self.loaded(not_after_unix);
        self.reloads[0].inc();
    }

    /// A reload failed: the certificate in use stays.
    pub fn reload_failed(&self) {
        self.reloads[1].inc();
    }

    /// Reloads counted with `result` (one of [`TLS_RELOAD_RESULTS`]).
    pub fn reloads(&self, result: usize) -> u64 {
        self.reloads[result].get()
    }

    fn render(&self, out: &mut String) {
        if !self.loaded.load(Ordering::Relaxed) {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP ringws_tls_reloads_total Certificate reloads (SIGHUP), by result; a failed one keeps the certificate in use\n# TYPE ringws_tls_reloads_total counter"
        );
        for (r, result) in TLS_RELOAD_RESULTS.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringws_tls_reloads_total{{result=\"{result}\"}} {}",
                self.reloads[r].get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP ringws_tls_cert_not_after_seconds Expiry (notAfter, Unix time) of the certificate new TLS handshakes present\n# TYPE ringws_tls_cert_not_after_seconds gauge"
        );
        let not_after = self.not_after.load(Ordering::Relaxed);
        if not_after != 0 {
            let _ = writeln!(out, "ringws_tls_cert_not_after_seconds {not_after}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::HandshakeError;

    #[test]
    fn handshake_failures_have_named_reasons() {
        let reason = |error: HandshakeError| HandshakeFailure::from(&error).label();
        assert_eq!(reason(HandshakeError::BadRequest("x")), "bad_request");
        assert_eq!(reason(HandshakeError::NotHttp11), "bad_request");
        assert_eq!(reason(HandshakeError::OriginNotAllowed), "origin");
        assert_eq!(reason(HandshakeError::MethodNotAllowed), "method");
        assert_eq!(reason(HandshakeError::UpgradeRequired), "upgrade_required");
        assert_eq!(reason(HandshakeError::VersionNotSupported), "version");
        assert_eq!(reason(HandshakeError::HeadersTooLarge), "headers_too_large");
        assert_eq!(reason(HandshakeError::NotFound), "not_found");
        assert_eq!(HandshakeFailure::Expectation.label(), "expectation");
        assert_eq!(HandshakeFailure::Timeout.label(), "timeout");
        assert_eq!(HandshakeFailure::Handler.label(), "handler");
        assert!(HANDSHAKE_FAILURES
            .iter()
            .all(|label| label.parse::<u16>().is_err()));
    }
}
