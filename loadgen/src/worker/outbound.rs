//! Getting queued frames out: the list of connections with something to send (each at most once per
//! loop iteration), the hand-over of a connection's gathered output to the engine (for wss:// encrypted
//! first), and the measure of what a connection holds unsent (its backlog).
//!
//! Hot path: one engine send per connection per loop iteration at most, all of a loop's sends submitted
//! together by the engine's next wait; no allocation (the dirty list and the output buffers keep their
//! capacity), no lock, no log line, no socket call of its own. A connection whose previous send is
//! unfinished is left alone here: the engine's `Sent { idle: true }` brings it back.

use super::teardown::io_error_counter;
use super::Worker;
use crate::engine::{Engine, NO_SOCK};
use crate::stats::Counter;

impl<E: Engine> Worker<E> {
    /// Puts connection `i` on the list of connections to flush in this loop iteration (once).
    pub(super) fn mark_dirty(&mut self, i: usize) {
        if !self.conns[i].dirty {
            self.conns[i].dirty = true;
            self.dirty.push(i as u32);
        }
    }

    /// Flushes every connection on the list, then empties it.
    pub(super) fn flush_dirty(&mut self, now: u64) {
        for k in 0..self.dirty.len() {
            let i = self.dirty[k] as usize;
            self.conns[i].dirty = false;
            self.flush(i, now);
        }
        self.dirty.clear();
    }

    /// Hands the connection's gathered output to the engine, unless its previous send is unfinished (then
    /// the engine's `Sent { idle: true }` brings the connection back here).
    /// wss://: the gathered plaintext is encrypted only when the engine can take it, so that it waits
    /// (and counts as backlog) in `out` like plain output.
    fn flush(&mut self, i: usize, now: u64) {
        let conn = &mut self.conns[i];
        if conn.sock == NO_SOCK {
            return;
        }
        let result = match conn.tls.as_deref_mut() {
            None => {
                if conn.out.is_empty() {
                    return;
                }
                self.io.send(conn.sock, &mut conn.out)
            }
            Some(tls) => {
                if self.io.unsent(conn.sock) > 0 {
                    return;
                }
                if tls.seal(&mut conn.out).is_err() {
                    self.connection_ended(i, Counter::TlsError, now);
                    return;
                }
                if tls.cipher.is_empty() {
                    return;
                }
                self.io.send(conn.sock, &mut tls.cipher)
            }
        };
        match result {
            Ok(n) => self.counters.add(Counter::BytesSent, n as u64),
            Err(err) => {
                let reason = io_error_counter(&err);
                self.connection_ended(i, reason, now);
            }
        }
    }

    /// Bytes queued on connection `i` but not yet accepted by its socket.
    pub(super) fn backlog(&self, i: usize) -> usize {
        let conn = &self.conns[i];
        conn.out.len()
            + if conn.sock == NO_SOCK {
                0
            } else {
                self.io.unsent(conn.sock)
            }
    }
}
