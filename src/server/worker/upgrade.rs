//! The opening handshake of a connection: collecting the HTTP request head (across receives), routing a
//! plain HTTP request, and upgrading a WebSocket request (policy checks, capacity, the 101, `on_open`).
//!
//! Never on the message hot path. Must never allocate for a refused request beyond its answer, never answer
//! twice, and never let a connection that did not complete the handshake reach the handler.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::protocol::handshake::{
    parse_request, validate_upgrade, write_http_response, HandshakePolicy, Request,
};

use super::Worker;
use crate::server::config::PublishConfig;
use crate::server::connection::{flags::*, State};
use crate::server::handler::{ConnId, Ctx, Handler, UpgradeDecision, UpgradeRequest};
use crate::server::http;
use crate::server::http::publish::{publish_step, write_published, PublishStep};
use crate::server::metrics::{REJECT_MAX_CONNECTIONS, REJECT_SHUTTING_DOWN};

impl<H: Handler> Worker<'_, H> {
    /// Handles request bytes of a connection still in its opening handshake.
    pub(super) fn on_handshake_bytes(&mut self, key: usize, bytes: &mut [u8]) {
        match self.core.conns[key].take_pending() {
            None => {
                self.handle_request(key, bytes);
                let conn = &mut self.core.conns[key];
                if conn.state == State::Handshake && conn.has(WAITING_BODY) && !conn.has_pending() {
                    conn.set_pending(bytes.to_vec());
                }
            }
            Some(mut pending) => {
                pending.extend_from_slice(bytes);
                self.handle_request(key, &mut pending);
                if let Some(conn) = self.core.conns.get_mut(key) {
                    if conn.state == State::Handshake && !conn.has_pending() {
                        conn.set_pending(pending);
                    }
                }
            }
        }
    }

    /// `POST /publish?topic=T` (the route being on with `publish`): decided by `http::publish`, acted on
    /// here (wait for the rest of the body, publish or broadcast, answer).
    pub(super) fn handle_publish(
        &mut self,
        key: usize,
        request: &Request<'_>,
        body: &[u8],
        publish: &PublishConfig,
    ) {
        match publish_step(request, body, publish, self.core.config.max_message_size) {
            PublishStep::Refuse(refusal) => {
                self.core.metrics.publish_refusals[refusal.index()].inc();
                self.core
                    .answer_http(key, |out| refusal.write_response(out));
            }
            PublishStep::NeedBody => {
                // The caller keeps the bytes received so far.
                self.core.conns[key].set(WAITING_BODY);
            }
            PublishStep::Publish { topic, kind, body } => {
                match topic {
                    Some(topic) => self.core.publish(topic, kind, body),
                    None => self.core.broadcast(kind, body, None),
                }
                self.core.metrics.http_requests.inc();
                self.core.answer_http(key, write_published);
            }
        }
    }

    /// Parses `data` as the start of an HTTP request and answers it, upgrades, or keeps it for more.
    pub(super) fn handle_request(&mut self, key: usize, data: &mut [u8]) {
        let max_header_bytes = self.core.config.max_header_bytes;
        let parsed = match parse_request(data, max_header_bytes) {
            Ok(None) => {
                let conn = &mut self.core.conns[key];
                if !conn.has_pending() {
                    // Keep the start of the request for the next receive (the caller keeps an existing one).
                    conn.set_pending(data.to_vec());
                }
                return;
            }
            Ok(Some(parsed)) => parsed,
            Err(error) => {
                tracing::debug!(worker = self.core.index, "bad request: {error}");
                self.core.metrics.handshake_failure(error.status());
                self.core.answer_http(key, |out| error.write_response(out));
                return;
            }
        };
        let (request, consumed) = parsed;
        self.core.conns[key].clear_pending();
        // Without a publish configuration, /publish is an unknown path like any other (404 below).
        let config = Arc::clone(&self.core.config);
        if let Some(publish) = &config.publish {
            if request.path_only() == "/publish" && !http::wants_websocket(&request) {
                self.handle_publish(key, &request, &data[consumed..], publish);
                return;
            }
        }
        if !http::wants_websocket(&request) {
            self.core.metrics.http_requests.inc();
            // With its own listener, /metrics is not served here.
            let shared = Arc::clone(&self.core.shared);
            let metrics = config
                .metrics_listen
                .is_none()
                .then_some(&shared.metrics[..]);
            let status = self
                .core
                .answer_http(key, |out| http::route_with_metrics(&request, metrics, out));
            if status >= 400 {
                self.core.metrics.handshake_failure(status);
            }
            return;
        }
        self.upgrade(key, &request);
        // Frames the client sent right behind its request.
        let rest = &mut data[consumed..];
        if !rest.is_empty() && self.core.conns[key].state == State::Open {
            self.feed(key, rest);
        }
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
                tracing::debug!(worker = self.core.index, "handshake refused: {error}");
                self.core.metrics.handshake_failure(error.status());
                self.core.answer_http(key, |out| error.write_response(out));
                return;
            }
        };
        if self.core.shutting_down {
            self.core.metrics.rejected[REJECT_SHUTTING_DOWN].inc();
            self.core.answer_http(key, http::write_503);
            return;
        }
        let shown = UpgradeRequest {
            request,
            subprotocol: upgrade.protocol,
        };
        if let UpgradeDecision::Refuse { status, reason } = self.handler.on_upgrade(&shown) {
            let status = if (400..=599).contains(&status) {
                status
            } else {
                403
            };
            tracing::debug!(
                worker = self.core.index,
                status,
                "upgrade refused by the handler: {reason}"
            );
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
            return;
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
            self.core.metrics.rejected[REJECT_MAX_CONNECTIONS].inc();
            self.core.answer_http(key, http::write_503);
            return;
        }
        let now = self.core.wheel.now();
        let path = request.path();
        let (accept_key, protocol) = (upgrade.key, upgrade.protocol);
        let conn = &mut self.core.conns[key];
        conn.state = State::Open;
        conn.since = now;
        conn.last_activity = now;
        self.core.metrics.websockets_open.inc();
        self.core.metrics.websockets_total.inc();
        self.core.push_bytes(key, 256, |out| {
            crate::protocol::handshake::write_101(out, accept_key, protocol)
        });
        if self.core.deadlines.idle > 0 {
            self.core
                .schedule(key, now.wrapping_add(self.core.deadlines.idle));
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
}
