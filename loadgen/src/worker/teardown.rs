//! How a connection ends: the end of a connection the worker did not ask for (end of stream, an I/O or
//! TLS error, a close from the server, a protocol violation), counted by cause with its unanswered
//! messages as lost and followed by a reconnect, the next churn cycle or nothing; the end of a close the
//! worker started (a churn cycle's, or its timeout); and the closing of the socket itself, with the
//! connection's last words sent best effort.
//!
//! Runs once per connection end, never per message, and never makes a socket call itself (the engine
//! closes). It must never leave the open-connection count or the churn cycle count off by one: during the
//! run, every path out of `Open` or `Closing` goes through `release_open_connection` (the closing of
//! everything at the end, in `phases.rs`, uncounts the connections itself).

use super::{Behaviour, State, Worker};
use crate::engine::{Engine, NO_SOCK};
use crate::plan::Phase;
use crate::stats::{self, Counter};
use std::io;

/// The counter for a send or receive that failed, by errno.
pub(super) fn io_error_counter(err: &io::Error) -> Counter {
    match err.raw_os_error() {
        Some(libc::ECONNRESET) | Some(libc::EPIPE) => Counter::Reset,
        _ => Counter::IoError,
    }
}

impl<E: Engine> Worker<E> {
    /// Connection `i` ended for `reason` (end of stream, an I/O or TLS error): a failed attempt while it
    /// was connecting or handshaking, a lost connection once it was open (an end during the TLS
    /// handshake counts as a TLS handshake failure).
    pub(super) fn connection_ended(&mut self, i: usize, reason: Counter, now: u64) {
        // The connection ended while its TLS handshake was under way.
        let reason = match &self.conns[i].tls {
            Some(tls) if tls.handshaking() => Counter::TlsHandshake,
            _ => reason,
        };
        match self.conns[i].state {
            State::Connecting | State::Handshaking => self.connect_failed(i, reason, now),
            State::Open | State::Closing => self.connection_lost(i, reason, now),
            State::Waiting | State::Dead => {}
        }
    }

    /// An open connection ended without us asking: count why, count its unanswered messages as lost,
    /// and reconnect if asked to.
    pub(super) fn connection_lost(&mut self, i: usize, reason: Counter, now: u64) {
        self.conns[i].out.clear();
        self.connection_lost_sending_output(i, reason, now);
    }

    /// `connection_lost`, sending what the connection's output holds (a close frame) first, best effort.
    pub(super) fn connection_lost_sending_output(&mut self, i: usize, reason: Counter, now: u64) {
        if matches!(self.conns[i].state, State::Connecting | State::Handshaking) {
            self.connect_failed(i, reason, now);
            return;
        }
        if self.conns[i].state == State::Closing && self.conns[i].behaviour == Behaviour::Churn {
            // The server closed TCP right after its close frame: the cycle still completed.
            if reason == Counter::Eof {
                self.finish_closing(i, now, false);
                return;
            }
        }
        self.counters.inc(reason);
        let lost = self.conns[i].traffic.in_flight.len() as u64;
        self.counters.add(Counter::Lost, lost);
        self.conns[i].traffic.in_flight.clear();
        self.release_open_connection(i);
        if self.conns[i].behaviour == Behaviour::Churn {
            self.active_cycles -= 1;
            self.schedule_next_cycle(i, now);
        } else if self.plan.reconnect && self.phase != Phase::Drain {
            self.schedule_reconnect(i, now);
        } else {
            self.conns[i].state = State::Dead;
        }
    }

    /// Ends a connection we were closing (churn cycle end, or close timeout when `timed_out`).
    pub(super) fn finish_closing(&mut self, i: usize, now: u64, timed_out: bool) {
        if timed_out {
            self.counters.inc(Counter::ConnectTimeout);
        } else {
            self.counters.inc(Counter::ChurnCycles);
            let start = self.conns[i].traffic.cycle_start_ns;
            stats::record(&mut self.hist, now - start);
        }
        self.conns[i].out.clear();
        self.release_open_connection(i);
        self.active_cycles -= 1;
        self.schedule_next_cycle(i, now);
    }

    /// Closes the socket of an open (or closing) connection, sending what its output holds first (best
    /// effort), resets its buffers, and counts it as no longer open.
    fn release_open_connection(&mut self, i: usize) {
        self.close_socket(i);
        let conn = &mut self.conns[i];
        conn.timer_due = 0;
        conn.state = State::Waiting;
        self.counters.dec(Counter::Open);
    }

    /// Closes connection `i`'s socket, sending what its output holds first (best effort; for wss://
    /// encrypted, then close_notify), and drops its TLS state.
    pub(super) fn close_socket(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if conn.sock != NO_SOCK {
            match conn.tls.as_deref_mut() {
                None => self.io.close(conn.sock, &conn.out),
                Some(tls) => match tls.seal_last(&mut conn.out) {
                    Ok(()) => self.io.close(conn.sock, &tls.cipher),
                    Err(_) => self.io.close(conn.sock, &[]),
                },
            }
            conn.sock = NO_SOCK;
        }
        conn.tls = None;
        conn.out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_their_counters() {
        let counter = |errno| io_error_counter(&io::Error::from_raw_os_error(errno));
        assert_eq!(counter(libc::ECONNRESET), Counter::Reset);
        assert_eq!(counter(libc::EPIPE), Counter::Reset);
        assert_eq!(counter(libc::ETIMEDOUT), Counter::IoError);
        assert_eq!(counter(libc::ENOBUFS), Counter::IoError);
        assert_eq!(
            io_error_counter(&io::Error::other("no errno")),
            Counter::IoError
        );
    }
}
