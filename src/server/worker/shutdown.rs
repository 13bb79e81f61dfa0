//! Graceful shutdown of a worker: stop accepting, close the listener, close 1001 to every open connection,
//! abort handshakes, and after the shutdown timeout abort whatever is left.
//!
//! Must never leave a client without its 1001 while the timeout allows it, and never outlive the timeout
//! by more than the short grace given to the aborts.

use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::protocol::CloseCode;
use crate::reactor::{Op, UserData};

use crate::reactor::Completion;
use crate::server::connection::State;
use crate::server::handler::Handler;

use super::timers::now;
use super::{Core, Worker};
use crate::reactor::NO_CONNECTION;

impl Core {
    pub(super) fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        self.shutdown_deadline = Some(now() + self.config.shutdown_timeout);
        if self.accept_armed {
            self.ring.cancel(
                UserData::new(NO_CONNECTION, 0, Op::AcceptMulti).encode(),
                UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
            );
        }
        if let Some(listener) = self.listener.take() {
            let fd = listener.as_raw_fd();
            std::mem::forget(listener);
            self.ring
                .close_fd(fd, UserData::new(NO_CONNECTION, 0, Op::Ignore).encode());
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            match self.conns[key].state {
                State::Handshake => self.abort(key),
                State::Open => {
                    self.send_close(key, CloseCode::GOING_AWAY, "server shutting down");
                    self.leave_open(key, Some(CloseCode::GOING_AWAY));
                }
                State::Closing => {}
            }
        }
        tracing::info!(
            worker = self.index,
            connections = self.conns.len(),
            "shutting down"
        );
    }
}

impl<H: Handler> Worker<'_, H> {
    /// Called after each batch while shutting down: whether the worker is done (every connection released,
    /// or the shutdown timeout passed and what was left has been aborted, with one second of grace for
    /// the aborts to complete).
    pub(super) fn shutdown_finished(&mut self, completions: &mut Vec<Completion>) -> bool {
        if self.core.conns.is_empty() {
            return true;
        }
        let Some(deadline) = self.core.shutdown_deadline else {
            return false;
        };
        if now() < deadline {
            return false;
        }
        // Out of patience: abort whatever is left, then give the closes a moment.
        self.core.shutdown_deadline = None;
        let keys: Vec<usize> = self.core.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.core.abort(key);
        }
        self.end_of_batch();
        let hard_deadline = now() + Duration::from_secs(1);
        while !self.core.conns.is_empty() && now() < hard_deadline {
            if self.core.ring.submit_and_wait(1).is_err() {
                break;
            }
            self.run_batch(completions);
        }
        true
    }
}
