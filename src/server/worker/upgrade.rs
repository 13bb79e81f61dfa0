//! The opening handshake of a connection: collecting the HTTP request head (across receives), routing a
//! plain HTTP request, and upgrading a WebSocket request (policy checks, capacity, the 101, `on_open`).
//!
//! Never on the message hot path. Must never allocate for a refused request beyond its answer, never answer
//! twice, and never let a connection that did not complete the handshake reach the handler.
//!
//! A request that spans receives is kept in its connection's `pending` bytes within the worker's budget
//! (`max_pending_request_memory`, counted by capacity in the `request_memory` gauge): a `/publish` body gets
//! room for the whole request at once, checked against the budget before it is allocated; the request
//! that would pass the budget is answered 503 and closed. The handshake timeout, counted from the accept,
//! bounds how long any of it is held.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::protocol::handshake::{
    parse_request, validate_upgrade, write_http_response, HandshakeError, HandshakePolicy, Request,
};

use super::{Core, Worker};
use crate::server::config::PublishConfig;
use crate::server::connection::{fanout_flags::EVENT_STREAM, flags::*, State};
use crate::server::handler::{ConnId, Ctx, Handler, UpgradeDecision, UpgradeRequest};
use crate::server::http;
use crate::server::http::publish::{publish_step, write_published, PublishStep};
use crate::server::http::refusals::{header_at_fault, log_refusal, Refusal, Severity};
use crate::server::metrics::{
    HandshakeFailure, REJECT_MAX_CONNECTIONS, REJECT_REASONS, REJECT_REQUEST_MEMORY,
    REJECT_SHUTTING_DOWN,
};

/// What a request needs after the bytes received so far were handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestProgress {
    /// Answered, upgraded or refused: nothing to keep.
    Done,
    /// The head is not complete: keep what came.
    MoreHead,
    /// A `POST /publish` head passed its checks and its body is not complete: keep the request, which is
    /// `request_len` bytes once whole, and send `100 Continue` first when `send_continue`.
    MoreBody {
        request_len: usize,
        send_continue: bool,
    },
}

/// The path of the event-stream route (Server-Sent Events), served when the handler
/// [serves event streams](Handler::serves_event_streams).
pub const EVENT_STREAM_PATH: &str = "/sse";

/// The head of an event stream's answer and its first bytes: no `Content-Length` (the stream ends with
/// the connection), no caching, no proxy buffering (`X-Accel-Buffering`), then a comment so that the
/// client sees the stream begin (a `retry:` field follows it, [`reconnect_delay_ms`]).
const EVENT_STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n: ringws\n\n";

/// The reconnection delay an event stream asks its client for (the `retry:` field, in ms): between
/// [`EVENT_STREAM_RETRY_MIN_MS`] and twice that, different from stream to stream, so that the browsers of a
/// restarted server's streams (which add no jitter of their own) do not all come back at the same moment.
fn reconnect_delay_ms(key: usize, generation: u32, now: u32) -> u64 {
    // splitmix64 of what tells streams apart: spread, not secret.
    let mut x = (key as u64) << 32 ^ u64::from(generation) ^ u64::from(now).rotate_left(17);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    EVENT_STREAM_RETRY_MIN_MS + x % EVENT_STREAM_RETRY_MIN_MS
}

/// The shortest reconnection delay an event stream asks for (ms); the longest is twice it.
pub const EVENT_STREAM_RETRY_MIN_MS: u64 = 1000;

/// Whether `Origin` refuses a request under `allowed` (the same rule as an upgrade's: empty allows any,
/// a request without `Origin` passes, two `Origin` headers never do).
fn origin_refused(request: &Request<'_>, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return false;
    }
    let mut origins = request.headers_named("origin");
    match (origins.next(), origins.next()) {
        (None, _) => false,
        (Some(origin), None) => {
            let origin = origin.trim_ascii();
            !allowed
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin))
        }
        (Some(_), Some(_)) => true,
    }
}

impl<H: Handler> Worker<'_, H> {
    /// Handles request bytes of a connection still in its opening handshake. A request that is not
    /// complete is kept in the connection's `pending` bytes, within the worker's budget
    /// (`max_pending_request_memory`, counted by capacity in `request_memory`).
    pub(super) fn on_handshake_bytes(&mut self, key: usize, bytes: &mut [u8]) {
        match self.core.conns[key].take_pending() {
            None => match self.handle_request(key, bytes) {
                RequestProgress::Done => {}
                progress => {
                    let capacity = match progress {
                        RequestProgress::MoreBody { request_len, .. } => request_len,
                        _ => bytes.len(),
                    };
                    if self.core.admit_pending(key, capacity) {
                        let mut kept = Vec::with_capacity(capacity);
                        kept.extend_from_slice(bytes);
                        self.keep_request(key, kept, progress);
                    }
                }
            },
            Some(mut pending) => {
                if self.core.conns[key].has(WAITING_BODY) {
                    // Room was made for the whole request: bytes beyond it are not part of it (one
                    // request per connection), and keeping them would grow the allocation.
                    let room = pending.capacity() - pending.len();
                    pending.extend_from_slice(&bytes[..bytes.len().min(room)]);
                } else {
                    pending.extend_from_slice(bytes);
                }
                match self.handle_request(key, &mut pending) {
                    RequestProgress::Done => {}
                    progress => {
                        if let RequestProgress::MoreBody { request_len, .. } = progress {
                            pending.reserve_exact(request_len.saturating_sub(pending.len()));
                        }
                        if self.core.admit_pending(key, pending.capacity()) {
                            self.keep_request(key, pending, progress);
                        }
                    }
                }
            }
        }
    }

    /// Keeps the request bytes received so far for the next receive; for a body, first tells a client
    /// that asked for it to send the body (once: the first time the head is complete, and only once the
    /// budget admitted the request).
    fn keep_request(&mut self, key: usize, kept: Vec<u8>, progress: RequestProgress) {
        let metrics = Arc::clone(&self.core.metrics);
        let conn = &mut self.core.conns[key];
        conn.set_pending(kept, &metrics);
        if let RequestProgress::MoreBody { send_continue, .. } = progress {
            if !conn.has(WAITING_BODY) {
                conn.set(WAITING_BODY);
                if send_continue {
                    self.core.push_bytes(key, http::CONTINUE.len(), |out| {
                        out.extend_from_slice(http::CONTINUE)
                    });
                }
            }
        }
    }

    /// `POST /publish?topic=T` (the route being on with `publish`): decided by `http::publish`, acted on
    /// here (publish or broadcast and answer, or refuse; a body still to come is kept by the caller).
    pub(super) fn handle_publish(
        &mut self,
        key: usize,
        request: &Request<'_>,
        head_len: usize,
        body: &[u8],
        publish: &PublishConfig,
    ) -> RequestProgress {
        match publish_step(request, body, publish, self.core.config.max_message_size) {
            PublishStep::Refuse(refusal) => {
                // The reason as `ringws_publish_refusals_total` labels it; never the token.
                log_refusal(&Refusal {
                    method: Some(request.method()),
                    path: Some(request.path()),
                    ..Refusal::new(
                        self.core.index,
                        refusal.status(),
                        crate::server::metrics::PUBLISH_REFUSALS[refusal.index()],
                    )
                });
                self.core.metrics.publish_refusals[refusal.index()].inc();
                self.core
                    .answer_http(key, |out| refusal.write_response(out));
                RequestProgress::Done
            }
            PublishStep::NeedBody {
                length,
                send_continue,
            } => RequestProgress::MoreBody {
                request_len: head_len + length,
                send_continue,
            },
            PublishStep::Publish { topic, kind, body } => {
                match topic {
                    Some(topic) => {
                        self.core.publish(topic, kind, body);
                    }
                    None => self.core.broadcast(kind, body, None),
                }
                self.core.metrics.http_requests.inc();
                self.core.answer_http(key, write_published);
                RequestProgress::Done
            }
        }
    }

    /// Parses `data` (the request bytes received so far) as the start of an HTTP request and answers it,
    /// upgrades, or says what more it needs (the caller keeps the bytes).
    pub(super) fn handle_request(&mut self, key: usize, data: &mut [u8]) -> RequestProgress {
        let max_header_bytes = self.core.config.max_header_bytes;
        let parsed = match parse_request(data, max_header_bytes) {
            Ok(None) => return RequestProgress::MoreHead,
            Ok(Some(parsed)) => parsed,
            Err(error) => {
                let reason = HandshakeFailure::from(&error);
                log_refusal(&Refusal {
                    detail: Some(error.reason()),
                    bytes: (error == HandshakeError::HeadersTooLarge).then_some(data.len() as u64),
                    ..Refusal::new(self.core.index, error.status(), reason.label())
                });
                self.core.metrics.handshake_failure(reason);
                self.core.answer_http(key, |out| error.write_response(out));
                return RequestProgress::Done;
            }
        };
        let (request, consumed) = parsed;
        // Without a publish configuration, /publish is an unknown path like any other (404 below).
        let config = Arc::clone(&self.core.config);
        if let Some(publish) = &config.publish {
            if request.path_only() == "/publish" && !http::wants_websocket(&request) {
                return self.handle_publish(key, &request, consumed, &data[consumed..], publish);
            }
        }
        if request.path_only() == EVENT_STREAM_PATH
            && !http::wants_websocket(&request)
            && self.handler.serves_event_streams()
        {
            self.open_event_stream(key, &request);
            return RequestProgress::Done;
        }
        if !http::wants_websocket(&request) {
            self.core.metrics.http_requests.inc();
            // With its own listener, /metrics is not served here.
            let shared = Arc::clone(&self.core.shared);
            let here = config.metrics_listen.is_none();
            let status = self.core.answer_http(key, |out| {
                http::route_with_metrics(&request, &shared.metrics, here, out)
            });
            // Not a failed handshake (no WebSocket was asked for), but a refused connection; a 503 from
            // /healthz (a `--broker` link down) is the health answer itself, logged by the broker.
            if status >= 400 && request.path_only() != "/healthz" {
                let reason = match status {
                    404 => "not_found",
                    405 => "method_not_allowed",
                    _ => "http",
                };
                log_refusal(&Refusal {
                    method: Some(request.method()),
                    path: Some(request.path()),
                    ..Refusal::new(self.core.index, status, reason)
                });
            }
            return RequestProgress::Done;
        }
        self.upgrade(key, &request);
        // Frames the client sent right behind its request.
        let rest = &mut data[consumed..];
        if !rest.is_empty() && self.core.conns[key].state == State::Open {
            self.feed(key, rest);
        }
        RequestProgress::Done
    }

    /// Answers a refused upgrade or event-stream request with `error`'s status: one refusal log line (the
    /// request's `path` as given), counted as a handshake failure of its reason.
    fn refuse_handshake(
        &mut self,
        key: usize,
        request: &Request<'_>,
        path: &str,
        error: &HandshakeError,
    ) {
        let reason = HandshakeFailure::from(error);
        log_refusal(&Refusal {
            method: Some(request.method()),
            path: Some(path),
            header: header_at_fault(error, request),
            detail: Some(error.reason()),
            ..Refusal::new(self.core.index, error.status(), reason.label())
        });
        self.core.metrics.handshake_failure(reason);
        self.core.answer_http(key, |out| error.write_response(out));
    }

    /// A WebSocket upgrade request: the protocol's checks, the handler's [`Handler::on_upgrade`], capacity,
    /// then the 101 and `on_open`.
    fn upgrade(&mut self, key: usize, request: &Request<'_>) {
        let config = Arc::clone(&self.core.config);
        let policy = HandshakePolicy {
            allowed_origins: &config.allowed_origins,
            subprotocols: &config.subprotocols,
        };
        let upgrade = match validate_upgrade(request, &policy) {
            Ok(upgrade) => upgrade,
            Err(error) => {
                self.refuse_handshake(key, request, request.path(), &error);
                return;
            }
        };
        if !self.admit(key, request, upgrade.protocol, false) {
            return;
        }
        let now = self.core.wheel.now();
        let path = request.path();
        let (accept_key, protocol) = (upgrade.key, upgrade.protocol);
        // permessage-deflate: the first offer the configuration can honour exactly, or none.
        let deflate = crate::protocol::deflate::negotiate(
            request.headers_named("sec-websocket-extensions"),
            &config.compression,
        );
        let conn = &mut self.core.conns[key];
        if let Some(agreed) = &deflate {
            conn.reader
                .set_deflate(crate::protocol::deflate::Negotiated::from_agreed(agreed));
        }
        conn.state = State::Open;
        conn.last_activity = now;
        self.core.metrics.websockets_open.inc();
        self.core.metrics.websockets_total.inc();
        self.core.push_bytes(key, 256, |out| {
            crate::protocol::handshake::write_101_with_extensions(
                out,
                accept_key,
                protocol,
                deflate.as_ref(),
            )
        });
        self.opened(key, path);
    }

    /// `GET /sse?topic=..` to a handler that serves event streams: the same admission as an upgrade
    /// (origin, expectation, shutdown, [`Handler::on_upgrade`] with its statuses and counters, capacity),
    /// then `200` with `text/event-stream` and no length (the stream ends with the connection), a first
    /// comment (so that a browser's `EventSource` fires `open` even before an event), and `on_open`.
    fn open_event_stream(&mut self, key: usize, request: &Request<'_>) {
        let config = Arc::clone(&self.core.config);
        let refusal = if request.method() != "GET" {
            Some(HandshakeError::MethodNotAllowed)
        } else if origin_refused(request, &config.allowed_origins) {
            Some(HandshakeError::OriginNotAllowed)
        } else if request.content_length().ok().flatten().unwrap_or(0) > 0
            || request.header("transfer-encoding").is_some()
        {
            Some(HandshakeError::BadRequest(
                "event-stream request with a body",
            ))
        } else {
            None
        };
        if let Some(error) = refusal {
            self.refuse_handshake(key, request, request.path_only(), &error);
            return;
        }
        if !self.admit(key, request, None, true) {
            return;
        }
        let now = self.core.wheel.now();
        let conn = &mut self.core.conns[key];
        conn.state = State::Open;
        conn.last_activity = now;
        conn.set_fanout(EVENT_STREAM);
        self.core.metrics.websockets_open.inc();
        self.core.metrics.websockets_total.inc();
        self.core.metrics.event_streams_total.inc();
        let generation = self.core.conns[key].generation;
        let retry = reconnect_delay_ms(key, generation, now);
        self.core
            .push_bytes(key, EVENT_STREAM_HEAD.len() + 16, |out| {
                out.extend_from_slice(EVENT_STREAM_HEAD);
                out.extend_from_slice(format!("retry: {retry}\n\n").as_bytes());
            });
        self.opened(key, request.path());
    }

    /// A connection just became open (101 or event stream): its idle deadline in place of the handshake's
    /// (none with idle pings off) and `on_open`.
    fn opened(&mut self, key: usize, path: &str) {
        let now = self.core.wheel.now();
        if self.core.deadlines.idle > 0 {
            self.core
                .schedule(key, now.wrapping_add(self.core.deadlines.idle));
        } else {
            self.core.wheel.cancel(key as u32);
        }
        let id = ConnId {
            key: key as u32,
            generation: self.core.conns[key].generation,
        };
        self.handler.on_open(
            &mut Ctx {
                core: &mut self.core,
            },
            id,
            path,
        );
    }

    /// What an upgrade and an event stream share after the request's own checks: the expectation,
    /// shutdown, the handler's [`Handler::on_upgrade`] (401 or its refusal), and `--max-connections`.
    /// Returns whether the connection may open; if not, it was answered (and counted, and logged).
    fn admit(
        &mut self,
        key: usize,
        request: &Request<'_>,
        subprotocol: Option<&str>,
        event_stream: bool,
    ) -> bool {
        let config = Arc::clone(&self.core.config);
        // An upgrade has no content: `100-continue` asks for nothing here (the 101 is the answer), any
        // other expectation cannot be met.
        if http::expectation(request) == http::Expectation::Unsupported {
            log_refusal(&Refusal {
                method: Some(request.method()),
                path: Some(request.path()),
                header: Some(("expect", request.header("expect").unwrap_or_default())),
                ..Refusal::new(self.core.index, 417, HandshakeFailure::Expectation.label())
            });
            self.core
                .metrics
                .handshake_failure(HandshakeFailure::Expectation);
            self.core.answer_http(key, http::write_expectation_failed);
            return false;
        }
        if self.core.shutting_down {
            log_refusal(&Refusal {
                method: Some(request.method()),
                path: Some(request.path()),
                ..Refusal::new(self.core.index, 503, REJECT_REASONS[REJECT_SHUTTING_DOWN])
            });
            self.core.metrics.rejected[REJECT_SHUTTING_DOWN].inc();
            self.core.answer_http(key, http::write_503);
            return false;
        }
        let shown = UpgradeRequest {
            request,
            subprotocol,
            event_stream,
        };
        let decision = self.handler.on_upgrade(&shown);
        if let UpgradeDecision::Unauthorized(failure) = decision {
            // The path without its query: a `?token=` is never logged.
            log_refusal(&Refusal {
                method: Some(request.method()),
                path: Some(request.path_only()),
                detail: Some(failure.label()),
                ..Refusal::new(self.core.index, 401, "auth")
            });
            self.core.metrics.auth.failure(failure);
            self.core
                .answer_http(key, |out| http::write_401(out, failure));
            return false;
        }
        if let UpgradeDecision::Refuse { status, reason } = decision {
            let status = if (400..=599).contains(&status) {
                status
            } else {
                403
            };
            log_refusal(&Refusal {
                method: Some(request.method()),
                path: Some(request.path()),
                detail: Some(&reason),
                ..Refusal::new(self.core.index, status, HandshakeFailure::Handler.label())
            });
            self.core.metrics.handshake_refused_by_handler();
            self.core.answer_http(key, |out| {
                write_http_response(
                    out,
                    status,
                    "text/plain; charset=utf-8",
                    &[("Connection", "close")],
                    format!("{reason}\n").as_bytes(),
                )
            });
            return false;
        }
        let open_total = self
            .core
            .shared
            .websockets_open
            .fetch_add(1, Ordering::AcqRel);
        if config.max_connections > 0 && open_total >= config.max_connections {
            self.core
                .shared
                .websockets_open
                .fetch_sub(1, Ordering::AcqRel);
            log_refusal(&Refusal {
                method: Some(request.method()),
                path: Some(request.path()),
                severity: Severity::Limit,
                ..Refusal::new(self.core.index, 503, REJECT_REASONS[REJECT_MAX_CONNECTIONS])
            });
            self.core.metrics.rejected[REJECT_MAX_CONNECTIONS].inc();
            self.core.answer_http(key, http::write_503);
            return false;
        }
        true
    }
}

impl Core {
    /// This worker's counters, for a handler to count what it refuses (`app::PubSub`'s auth denials).
    pub(crate) fn metrics(&self) -> &crate::server::metrics::WorkerMetrics {
        &self.metrics
    }

    /// Whether connection `key` may keep `capacity` bytes of a request not yet complete within the
    /// worker's budget (`max_pending_request_memory`, what `request_memory` counts). If not, the request
    /// is answered 503 and the connection closed (other connections keep what they hold); counted as a
    /// `request_memory` rejection.
    fn admit_pending(&mut self, key: usize, capacity: usize) -> bool {
        let held = self.metrics.request_memory.get() as usize;
        if held.saturating_add(capacity) <= self.config.max_pending_request_memory {
            return true;
        }
        log_refusal(&Refusal {
            severity: Severity::Limit,
            bytes: Some(capacity as u64),
            detail: Some("over --max-pending-request-memory"),
            ..Refusal::new(self.index, 503, REJECT_REASONS[REJECT_REQUEST_MEMORY])
        });
        self.metrics.rejected[REJECT_REQUEST_MEMORY].inc();
        self.answer_http(key, http::write_503_request_memory);
        false
    }
}

impl Core {
    /// The refusal lines waiting for a peer address (`http::refusals`): for each whose connection still
    /// holds its descriptor, the ring installs it as a regular one (`Op::PeerName`, answered in
    /// [`Core::on_peer_name`]); the others are written now, without the address. Called before anything
    /// that may close a descriptor is submitted (flushes, aborts), so the install comes first.
    pub(super) fn look_up_peers(&mut self) {
        let first = self.peer_lookups.len();
        crate::server::http::refusals::take_waiting_lines(&mut self.peer_lookups);
        let mut i = first;
        while i < self.peer_lookups.len() {
            let conn = self.peer_lookups[i].conn;
            let open = self
                .conns
                .get(conn.key as usize)
                .filter(|c| c.generation == conn.generation && !c.has(FD_CLOSING))
                .map(|c| c.file_index);
            match open {
                Some(file_index) => {
                    let ud = self.ud(conn.key as usize, crate::reactor::Op::PeerName);
                    self.ring.install_fd(file_index, ud);
                    i += 1;
                }
                None => {
                    let line = self.peer_lookups.swap_remove(i);
                    crate::server::http::refusals::log_with_peer(&line, None);
                }
            }
        }
    }

    /// The descriptor installed for a waiting refusal line (or the error): the line is written with the
    /// peer's address when it could be read, and the descriptor closed.
    pub(super) fn on_peer_name(&mut self, ud: crate::reactor::UserData, result: i32) {
        let Some(i) = self
            .peer_lookups
            .iter()
            .position(|line| line.conn.key == ud.key && line.conn.generation == ud.generation)
        else {
            if result >= 0 {
                // Not ours to keep: close it.
                let _ = crate::reactor::sys::peer_addr_of_installed(result);
            }
            return;
        };
        let line = self.peer_lookups.swap_remove(i);
        let peer = crate::reactor::sys::peer_addr_of_installed(result).ok();
        crate::server::http::refusals::log_with_peer(&line, peer);
    }
}
