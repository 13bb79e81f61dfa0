//! TLS on a connection (`wss://`, `https://`): received records go through rustls before the plaintext takes
//! the path plain bytes take, and a TLS failure ends only that connection.
//!
//! Queued plaintext (shared broadcast frames included) is encrypted here at flush time (`encrypt_queued`,
//! called by `outbound`'s flush); this room owns the receive side, the encryption and the failure path. Must never block on the TLS handshake (everything is driven by
//! the ring's completions) and never let one connection's TLS error touch another connection.

use crate::protocol::CloseCode;

use super::{Core, Worker};
use crate::server::connection::{flags::*, State};
use crate::server::handler::Handler;

impl<H: Handler> Worker<'_, H> {
    /// Received ciphertext of a TLS connection: through rustls, then the plaintext takes the path plain
    /// bytes take. After an HTTP answer or a protocol error the records are still processed (so that a
    /// handshake in progress completes and the answer can be sent) and the plaintext is dropped.
    pub(super) fn on_tls_input(&mut self, key: usize, input: &mut [u8]) {
        let conn = &mut self.core.conns[key];
        if conn.has(ENDING) {
            return;
        }
        let Some(mut tls) = conn.take_tls() else {
            return;
        };
        if tls.failed {
            conn.put_tls(tls);
            return;
        }
        let mut plain = std::mem::take(&mut self.core.tls_plain);
        plain.clear();
        let result = tls.receive(input, &mut self.core.pool, &mut plain);
        self.core.conns[key].put_tls(tls);
        self.core.mark_dirty(key);
        match result {
            Err(error) => self.core.tls_failed(key, &error),
            Ok(outcome) => {
                if outcome.handshake_completed {
                    self.core.metrics.tls_handshakes.inc();
                }
                let conn = &self.core.conns[key];
                if !plain.is_empty() && !conn.has(DISCARD_INPUT) && !conn.has(ENDING) {
                    if conn.state == State::Handshake {
                        self.on_handshake_bytes(key, &mut plain);
                    } else {
                        self.feed(key, &mut plain);
                    }
                }
            }
        }
        plain.clear();
        if plain.capacity() > 4 * crate::server::tls::CIPHERTEXT_AHEAD {
            plain = Vec::new();
        }
        self.core.tls_plain = plain;
    }
}

impl Core {
    /// At flush time: encrypts what is queued (shared frames included) into the ciphertext queue, with
    /// close_notify before our FIN; a connection ending before its handshake completed drops its plaintext
    /// (it can never be sent). A TLS error takes the failure path (the alert, if any, then FIN).
    pub(super) fn encrypt_queued(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let close = conn.has(SHUT_AFTER_FLUSH) && !conn.has(WRITE_SHUT);
        let ending = conn.has(ENDING);
        let (plain, tls) = conn.queue_and_tls_mut();
        let Some(tls) = tls else {
            return;
        };
        if ending && (!tls.handshake_done || tls.failed) {
            if let Some(queue) = plain.as_mut() {
                queue.clear(&mut self.pool);
            }
        }
        if let Err(error) = tls.encrypt_queued(plain.as_deref_mut(), &mut self.pool, close) {
            self.tls_failed(key, &error);
        }
    }

    /// A TLS error (garbage, plain HTTP on the TLS port, bad record, failed handshake): the connection
    /// ends after the alert rustls queued (if any) is sent; its plaintext queue is dropped (it can no
    /// longer be encrypted). Other connections are not affected.
    pub(super) fn tls_failed(&mut self, key: usize, error: &rustls::Error) {
        tracing::debug!(worker = self.index, "TLS error: {error}");
        self.metrics.tls_failures.inc();
        if self.conns[key].state == State::Open {
            self.metrics.close_code(1006);
            self.leave_open(key, Some(CloseCode::ABNORMAL));
        }
        let conn = &mut self.conns[key];
        if let Some(tls) = conn.tls_mut() {
            tls.failed = true;
        }
        if let Some(mut queue) = conn.queue.take() {
            queue.clear(&mut self.pool);
            self.pool.give_queue(queue);
        }
        conn.clear_pending();
        if conn.state != State::Closing {
            self.enter_closing(key);
        }
        self.conns[key].set(DISCARD_INPUT);
        self.shut_after_flush(key);
    }
}
