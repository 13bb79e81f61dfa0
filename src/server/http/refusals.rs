//! One log line per refused connection: a refused handshake, an HTTP request answered 4xx or 503, a
//! connection turned away for capacity or memory. Each line (`connection refused`, at `info`, or `warn`
//! when a server limit refused it) carries the worker, the status answered, the reason (the metrics label
//! where there is one: `origin`, `bad_request`, `max_connections`, ...) and the value at fault: the path,
//! the method, the header and its value (`field="origin" value="https://evil.example"`), the parser's complaint
//! (`detail`), or the bytes.
//!
//! Lines are rate-limited per worker thread: at most [`REFUSAL_LINES_PER_SECOND`] in each one-second
//! window; the next line after a window with refusals left out is preceded by one `warn` line counting
//! them (`N refused connections not logged`). A refusal left out costs a clock read and a counter: no
//! allocation, no formatting. Values from the request are logged as strings (escaped by the formatter,
//! JSON or text) and cut at [`MAX_LOGGED_VALUE`] bytes.
//!
//! The peer's address: a worker's connections are direct descriptors accepted without their address, so
//! a line the rate limit lets through is not written at once when the worker said which connection it is
//! handling ([`set_current_connection`]): it is kept ([`take_waiting_lines`], at most the rate limit's
//! lines a second, one allocation each) while the worker asks the ring for a regular descriptor of that
//! connection, reads the peer's address and writes the line with `peer` ([`log_with_peer`]); without a
//! current connection, or when the lookup fails, the line goes out without it.
//!
//! Owns the wording, the rate limit and the fields; never decides whether to refuse. Never on the message
//! hot path: only refusals reach it.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::protocol::handshake::{HandshakeError, Request};

/// The most refusal lines one worker logs per second (the rest are counted in a summary line).
pub const REFUSAL_LINES_PER_SECOND: u32 = 20;
/// The longest value (path, header) logged, in bytes; longer ones are cut at a character boundary.
pub const MAX_LOGGED_VALUE: usize = 256;

/// How severe a refusal is for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The client's request was refused (bad request, origin, unknown path, handler's decision).
    Client,
    /// A limit of the server refused it (capacity, memory): logged at `warn`.
    Limit,
}

/// One refused connection, as logged.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    pub worker: usize,
    /// The HTTP status answered (`None`: the connection was dropped without an answer, e.g. at its
    /// handshake deadline).
    pub status: Option<u16>,
    /// Why, as a short name (the metrics label where there is one).
    pub reason: &'static str,
    pub severity: Severity,
    /// The request's method and path (with its query), when the head was parsed.
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    /// The header at fault and its value (`("origin", b"https://evil.example")`).
    pub header: Option<(&'static str, &'a [u8])>,
    /// The parser's or the handler's words.
    pub detail: Option<&'a str>,
    /// A byte count at fault (a head over the limit, a request over the memory budget).
    pub bytes: Option<u64>,
}

impl<'a> Refusal<'a> {
    /// A refusal answered with `status`, with its reason only; add the rest with struct update syntax.
    pub fn new(worker: usize, status: u16, reason: &'static str) -> Refusal<'a> {
        Refusal {
            status: Some(status),
            ..Refusal::unanswered(worker, reason)
        }
    }

    /// A connection dropped without an answer (a handshake deadline passed), with its reason only.
    pub fn unanswered(worker: usize, reason: &'static str) -> Refusal<'a> {
        Refusal {
            worker,
            status: None,
            reason,
            severity: Severity::Client,
            method: None,
            path: None,
            header: None,
            detail: None,
            bytes: None,
        }
    }
}

/// The header a handshake refusal is about, with the value the request gave (empty when missing).
pub fn header_at_fault<'r>(
    error: &HandshakeError,
    request: &Request<'r>,
) -> Option<(&'static str, &'r [u8])> {
    let name = match error {
        HandshakeError::OriginNotAllowed => "origin",
        HandshakeError::VersionNotSupported => "sec-websocket-version",
        HandshakeError::UpgradeRequired => "upgrade",
        HandshakeError::MissingHost => "host",
        _ => return None,
    };
    Some((name, request.header(name).unwrap_or_default()))
}

/// The per-worker rate limit of refusal lines: fixed one-second windows. Pure (the time is passed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalLogLimit {
    /// The start of the current window (`None`: nothing logged yet).
    window_start: Option<Instant>,
    /// Lines logged in the current window.
    lines: u32,
    /// Refusals not logged since the last summary.
    left_out: u64,
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStep {
    /// Log it, after a summary line for `left_out` refusals not logged when that is above zero.
    Log { left_out: u64 },
    /// Count it and stay quiet.
    Quiet,
}

impl RefusalLogLimit {
    pub const fn new() -> RefusalLogLimit {
        RefusalLogLimit {
            window_start: None,
            lines: 0,
            left_out: 0,
        }
    }

    /// One refusal at `now`.
    pub fn step(&mut self, now: Instant) -> LogStep {
        let window_over = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1));
        if window_over {
            self.window_start = Some(now);
            self.lines = 0;
        }
        if self.lines >= REFUSAL_LINES_PER_SECOND {
            self.left_out += 1;
            return LogStep::Quiet;
        }
        self.lines += 1;
        LogStep::Log {
            left_out: std::mem::take(&mut self.left_out),
        }
    }
}

impl Default for RefusalLogLimit {
    fn default() -> Self {
        RefusalLogLimit::new()
    }
}

/// The connection a worker is handling, whose refusal lines wait for its peer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    pub key: u32,
    pub generation: u32,
}

/// A refusal line admitted by the rate limit, waiting for its connection's peer address: everything the
/// line says, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingLine {
    pub conn: ConnRef,
    worker: usize,
    status: Option<u16>,
    reason: &'static str,
    severity: Severity,
    method: Option<String>,
    path: Option<String>,
    field: Option<&'static str>,
    value: Option<String>,
    detail: Option<String>,
    bytes: Option<u64>,
}

thread_local! {
    /// The limit of the worker running on this thread (one worker per thread).
    static LIMIT: Cell<RefusalLogLimit> = const { Cell::new(RefusalLogLimit::new()) };
    /// The connection this thread's worker is handling (`None`: none, or not a connection's event).
    static CURRENT: Cell<Option<ConnRef>> = const { Cell::new(None) };
    /// Lines admitted and waiting for their peer's address.
    static WAITING: RefCell<Vec<WaitingLine>> = const { RefCell::new(Vec::new()) };
}

/// Says which connection the worker on this thread is handling, so that a refusal line about it waits
/// for its peer's address (`None` once it is done with it).
pub fn set_current_connection(conn: Option<ConnRef>) {
    CURRENT.with(|current| current.set(conn));
}

/// The lines waiting for a peer address since the last call (appended to `out`; nothing allocated when
/// none waits).
pub fn take_waiting_lines(out: &mut Vec<WaitingLine>) {
    WAITING.with(|waiting| {
        let mut waiting = waiting.borrow_mut();
        if !waiting.is_empty() {
            out.append(&mut waiting);
        }
    });
}

/// Writes a waiting line, with the peer's address when it is known.
pub fn log_with_peer(line: &WaitingLine, peer: Option<SocketAddr>) {
    write_line(
        line.worker,
        line.status,
        line.reason,
        line.severity,
        peer,
        line.method.as_deref(),
        line.path.as_deref(),
        line.field,
        line.value.as_deref(),
        line.detail.as_deref(),
        line.bytes,
    );
}

/// `value` as text cut at [`MAX_LOGGED_VALUE`] bytes (at a character boundary; bytes that are not UTF-8
/// are replaced, which allocates only then).
fn shown(value: &[u8]) -> std::borrow::Cow<'_, str> {
    let mut end = value.len().min(MAX_LOGGED_VALUE);
    let text = loop {
        match std::str::from_utf8(&value[..end]) {
            Ok(text) => break std::borrow::Cow::Borrowed(text),
            // A character cut by the limit: end before it.
            Err(e) if e.error_len().is_none() && end < value.len() => end = e.valid_up_to(),
            Err(_) => break String::from_utf8_lossy(&value[..end]),
        }
    };
    text
}

/// What a credential is logged as.
const REDACTED: &str = "[redacted]";

/// `path` with the value of every `token` query parameter (a JWT, `docs/PROTOCOL.md`) replaced by
/// [`REDACTED`]: a refused request's line must not hand a working token to whoever reads the logs.
fn redact_tokens(path: std::borrow::Cow<'_, str>) -> std::borrow::Cow<'_, str> {
    let Some((base, query)) = path.split_once('?') else {
        return path;
    };
    let is_token = |param: &str| {
        let name = param.split_once('=').map_or(param, |(name, _)| name);
        name.eq_ignore_ascii_case("token")
    };
    if !query.split('&').any(is_token) {
        return path;
    }
    let mut out = String::with_capacity(path.len());
    out.push_str(base);
    for (i, param) in query.split('&').enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        if is_token(param) {
            let name = param.split_once('=').map_or(param, |(name, _)| name);
            out.push_str(name);
            out.push('=');
            out.push_str(REDACTED);
        } else {
            out.push_str(param);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Logs `refusal` unless this worker's rate limit is spent (then it is only counted) or its level is
/// filtered out (then nothing happens).
pub fn log_refusal(refusal: &Refusal<'_>) {
    // A line the filter would drop is not counted against the limit either.
    let enabled = match refusal.severity {
        Severity::Client => tracing::enabled!(tracing::Level::INFO),
        Severity::Limit => tracing::enabled!(tracing::Level::WARN),
    };
    if !enabled {
        return;
    }
    let step = LIMIT.with(|limit| {
        let mut state = limit.get();
        let step = state.step(Instant::now());
        limit.set(state);
        step
    });
    let LogStep::Log { left_out } = step else {
        return;
    };
    if left_out > 0 {
        tracing::warn!(
            worker = refusal.worker,
            left_out,
            "{left_out} refused connections not logged (at most {REFUSAL_LINES_PER_SECOND} lines a \
             second per worker)"
        );
    }
    let path = refusal
        .path
        .map(|path| redact_tokens(shown(path.as_bytes())));
    // Methods are tokens (httparse); only their length needs bounding.
    let method = refusal.method.map(|method| shown(method.as_bytes()));
    let (field, value) = match refusal.header {
        // Credentials are never logged.
        Some((name, _)) if name.eq_ignore_ascii_case("authorization") => {
            (Some(name), Some(std::borrow::Cow::Borrowed(REDACTED)))
        }
        Some((name, value)) => (Some(name), Some(shown(value))),
        None => (None, None),
    };
    let detail = refusal.detail.map(|detail| shown(detail.as_bytes()));
    if let Some(conn) = CURRENT.with(Cell::get) {
        let line = WaitingLine {
            conn,
            worker: refusal.worker,
            status: refusal.status,
            reason: refusal.reason,
            severity: refusal.severity,
            method: method.map(|m| m.into_owned()),
            path: path.map(|p| p.into_owned()),
            field,
            value: value.map(|v| v.into_owned()),
            detail: detail.map(|d| d.into_owned()),
            bytes: refusal.bytes,
        };
        WAITING.with(|waiting| waiting.borrow_mut().push(line));
        return;
    }
    write_line(
        refusal.worker,
        refusal.status,
        refusal.reason,
        refusal.severity,
        None,
        method.as_deref(),
        path.as_deref(),
        field,
        value.as_deref(),
        detail.as_deref(),
        refusal.bytes,
    );
}

/// The `connection refused` line itself.
#[allow(clippy::too_many_arguments)]
fn write_line(
    worker: usize,
    status: Option<u16>,
    reason: &'static str,
    severity: Severity,
    peer: Option<SocketAddr>,
    method: Option<&str>,
    path: Option<&str>,
    field: Option<&'static str>,
    value: Option<&str>,
    detail: Option<&str>,
    bytes: Option<u64>,
) {
    let peer = peer.map(tracing::field::display);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                worker,
                peer,
                status,
                reason,
                method,
                path,
                field,
                value,
                detail,
                bytes,
                "connection refused"
            )
        };
    }
    match severity {
        Severity::Client => line!(info),
        Severity::Limit => line!(warn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_per_second_then_a_count_of_the_rest() {
        let mut limit = RefusalLogLimit::new();
        let start = Instant::now();
        for _ in 0..REFUSAL_LINES_PER_SECOND {
            assert_eq!(limit.step(start), LogStep::Log { left_out: 0 });
        }
        for i in 0..5 {
            assert_eq!(
                limit.step(start + Duration::from_millis(100 * i)),
                LogStep::Quiet
            );
        }
        // The next window: the first line carries the count left out.
        let next = start + Duration::from_secs(1);
        assert_eq!(limit.step(next), LogStep::Log { left_out: 5 });
        assert_eq!(limit.step(next), LogStep::Log { left_out: 0 });
        // A window without refusals changes nothing.
        assert_eq!(
            limit.step(next + Duration::from_secs(10)),
            LogStep::Log { left_out: 0 }
        );
    }

    #[test]
    fn tokens_in_the_query_are_redacted() {
        let redacted = |path: &str| redact_tokens(std::borrow::Cow::Borrowed(path)).into_owned();
        assert_eq!(redacted("/ws"), "/ws");
        assert_eq!(redacted("/ws?topic=a"), "/ws?topic=a");
        assert_eq!(
            redacted("/ws?token=eyJhbGciOi.x.y&topic=a"),
            "/ws?token=[redacted]&topic=a"
        );
        assert_eq!(
            redacted("/ws?topic=a&TOKEN=abc&token"),
            "/ws?topic=a&TOKEN=[redacted]&token=[redacted]"
        );
        assert_eq!(redacted("/ws?tokens=1"), "/ws?tokens=1");
    }

    #[test]
    fn values_are_cut_at_a_character_boundary() {
        assert_eq!(shown(b"/chat"), "/chat");
        let long = "é".repeat(MAX_LOGGED_VALUE);
        let cut = shown(long.as_bytes());
        assert!(cut.len() <= MAX_LOGGED_VALUE && cut.len() >= MAX_LOGGED_VALUE - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(shown(b"a\xffb"), "a\u{fffd}b");
    }
}
