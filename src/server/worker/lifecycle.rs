//! A connection's life after the handshake: leaving the open state, the closing handshake, errors and
//! losses, and the teardown steps up to the release of its slot.
//!
//! Must never release a slot (and so let its generation move on) while an operation for it is in flight,
//! and never run the handler's `on_close` twice for one connection.

use std::sync::atomic::Ordering;

use crate::protocol::{CloseCode, ProtocolError};
use crate::reactor::{Op, UserData};

use super::Core;
use crate::reactor::NO_CONNECTION;
use crate::server::connection::{flags::*, State};
use crate::server::handler::ConnId;

/// The two ways a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Send what is queued first (a FIN after it if asked), then stop reading and release.
    AfterFlush,
    /// Cancel what is in flight and drop the queue, then release.
    Abort,
}

impl Core {
    /// The connection stops being open (closing handshake, error, loss): counters, close timer, and the
    /// handler's `on_close` (after the current event).
    pub(super) fn leave_open(&mut self, key: usize, code: Option<CloseCode>) {
        let conn = &self.conns[key];
        if conn.state != State::Open {
            return;
        }
        let id = ConnId {
            key: key as u32,
            generation: conn.generation,
        };
        self.metrics.websockets_open.sub(1);
        self.shared.websockets_open.fetch_sub(1, Ordering::AcqRel);
        self.closed.push((id, code));
        self.enter_closing(key);
    }

    /// The one way into [`State::Closing`]: the state and the close deadline (the connection's timer
    /// entry from now on).
    pub(super) fn enter_closing(&mut self, key: usize) {
        let now = self.wheel.now();
        self.conns[key].state = State::Closing;
        self.schedule(key, now.wrapping_add(self.deadlines.close));
    }

    /// Ends a connection without waiting for its queue: cancel what is in flight now, then release.
    pub(super) fn abort(&mut self, key: usize) {
        self.end(key, Ending::Abort);
    }

    /// Ends a connection once its queue is flushed (the peer may have shut only its write side), then
    /// stops reading and releases it.
    pub(super) fn end_after_flush(&mut self, key: usize) {
        self.end(key, Ending::AfterFlush);
    }

    pub(super) fn protocol_error(&mut self, key: usize, error: ProtocolError) {
        tracing::debug!(worker = self.index, "protocol error: {error}");
        let code = error.close_code();
        self.send_close(key, code, error.reason());
        self.conns[key].set(DISCARD_INPUT);
        self.leave_open(key, Some(code));
        self.shut_after_close_reply(key);
    }

    /// Shut our write side (FIN) once everything queued is sent; the peer's EOF then releases it.
    pub(super) fn shut_after_flush(&mut self, key: usize) {
        self.conns[key].set(SHUT_AFTER_FLUSH);
        self.mark_dirty(key);
    }

    /// After a close frame the server sent because of the peer's input (its input is discarded from now
    /// on). Plain TCP shuts the write side once the close frame is out: the peer's reply still arrives
    /// and is dropped. Over TLS the write side ends with close_notify, after which a peer (OpenSSL) can
    /// no longer write its close reply: so the close frame goes out alone, and close_notify and FIN follow
    /// the next record the peer sends (its reply), its close_notify, or the close timeout
    /// (`tls_io::close_reply_arrived`, `timers`).
    pub(super) fn shut_after_close_reply(&mut self, key: usize) {
        match self.conns[key].tls_mut() {
            Some(tls) if !tls.failed => {
                tls.await_close_reply = true;
                self.mark_dirty(key);
            }
            _ => self.shut_after_flush(key),
        }
    }

    /// The connection was lost (reset, error): no close handshake is possible.
    pub(super) fn lost(&mut self, key: usize) {
        if self.conns[key].state == State::Open {
            self.metrics.close_code(1006);
        }
        self.leave_open(key, Some(CloseCode::ABNORMAL));
        self.abort(key);
    }

    pub(super) fn on_peer_eof(&mut self, key: usize) {
        let conn = &self.conns[key];
        if conn.state == State::Open {
            self.metrics.close_code(1006);
        }
        self.leave_open(key, Some(CloseCode::ABNORMAL));
        // Still send what is queued (the peer may only have shut its write side).
        self.end_after_flush(key);
    }

    /// Both endings: mark the connection ending (into Closing), then cancel what `ending` says, and
    /// release once nothing is in flight.
    fn end(&mut self, key: usize, ending: Ending) {
        let recv_ud = self.ud(key, Op::Recv);
        let send_ud = self.ud(key, Op::Send);
        let conn = &mut self.conns[key];
        if conn.state == State::Open {
            // Callers leave the open state first; keep counters right if one did not.
            self.leave_open(key, Some(CloseCode::ABNORMAL));
        }
        let conn = &mut self.conns[key];
        if !conn.has(ENDING) {
            conn.set(ENDING);
            conn.clear_pending();
            self.enter_closing(key);
        }
        let conn = &mut self.conns[key];
        if ending == Ending::Abort && !conn.has(ABORT) {
            conn.set(ABORT);
        }
        if conn.has(ABORT) && !conn.has(CANCEL_SENT) {
            conn.set(CANCEL_SENT);
            let (recv_armed, send_in_flight) = (conn.has(RECV_ARMED), conn.send_in_flight());
            if recv_armed {
                self.ring.cancel(
                    recv_ud,
                    UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
                );
            }
            if send_in_flight {
                self.ring.cancel(
                    send_ud,
                    UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
                );
            }
        } else if !conn.has(ABORT)
            && conn.has(RECV_ARMED)
            && !conn.has(CANCEL_SENT)
            && conn.queued_bytes() == 0
        {
            conn.set(CANCEL_SENT);
            self.ring.cancel(
                recv_ud,
                UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
            );
        }
        self.mark_dirty(key);
        self.try_release(key);
    }

    /// Closes the direct descriptor once nothing is in flight for an ending connection.
    pub(super) fn try_release(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if !conn.has(ENDING)
            || conn.has(FD_CLOSING)
            || conn.has(RECV_ARMED)
            || conn.has(SHUTDOWN_IN_FLIGHT)
            || conn.send_in_flight()
            || (!conn.has(ABORT) && conn.queued_bytes() > 0)
        {
            return;
        }
        let ud = self.ud(key, Op::Close);
        let conn = &mut self.conns[key];
        conn.set(FD_CLOSING);
        let file_index = conn.file_index;
        self.ring.close_fixed(file_index, ud);
    }

    pub(super) fn on_close_done(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        // The slot's next connection starts without a timer entry.
        self.wheel.cancel(key as u32);
        self.assembly_bytes -= conn.reader.buffered_capacity();
        if conn.has(REJECTED) {
            self.rejected_in_reserve -= 1;
        }
        if let Some(queue) = conn.queue.take() {
            self.pool.give_queue(queue);
        }
        if let Some(tls) = conn.tls_mut() {
            tls.release_buffers(&mut self.pool);
        }
        self.metrics.connections_open.sub(1);
        self.arm_accept();
    }

    pub(super) fn on_shutdown(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        conn.clear(SHUTDOWN_IN_FLIGHT);
        if conn.has(ENDING) && conn.has(RECV_ARMED) && !conn.has(CANCEL_SENT) {
            let ud = self.ud(key, Op::Recv);
            self.conns[key].set(CANCEL_SENT);
            self.ring
                .cancel(ud, UserData::new(NO_CONNECTION, 0, Op::Ignore).encode());
        }
        self.try_release(key);
    }

    pub(crate) fn close_connection(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let Some(key) = self.live_open(id) else {
            return;
        };
        self.send_close(key, code, reason);
        self.leave_open(key, Some(code));
    }
}
