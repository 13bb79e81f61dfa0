//! Graceful shutdown of a worker: stop accepting, close the listener, close 1001 to every open connection,
//! abort handshakes, and after the shutdown timeout abort whatever is left. And the drain after a
//! handover (`server::takeover`): stop accepting (the new process serves the listeners now), then close
//! the open connections with 1001 one by one, in a random order spread uniformly over `drain_window`, so
//! that their clients do not all reconnect in the same second; at the window's end what is left is shut
//! down as above.
//!
//! Must never leave a client without its 1001 while the timeout allows it, and never outlive the timeout
//! by more than the short grace given to the aborts. The drain never refuses a connection it accepted
//! before it stopped accepting: that one is served, and closed with 1001 at the window's end.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::protocol::CloseCode;

use crate::reactor::Completion;
use crate::server::connection::State;
use crate::server::handler::Handler;

use super::timers::now;
use super::{Core, Worker};

/// A worker's drain after a handover.
pub(super) struct Drain {
    /// The connections open when the drain began (key, generation), each with the instant its 1001 is
    /// due, earliest first.
    due: VecDeque<(Instant, usize, u32)>,
    /// The window's end: from there the rest is shut down ([`Core::begin_shutdown`]).
    ends_at: Instant,
}

/// When each of `conns` (key, generation) gets its 1001: the i-th of n in the order `order` gives (lowest
/// first) at `start + window * (i + 1/2) / n`, a uniform spread over the window. Earliest first.
fn drain_schedule(
    conns: &[(usize, u32)],
    start: Instant,
    window: Duration,
    order: impl Fn(usize, u32) -> u64,
) -> VecDeque<(Instant, usize, u32)> {
    let mut ordered: Vec<(u64, usize, u32)> = conns
        .iter()
        .map(|&(key, generation)| (order(key, generation), key, generation))
        .collect();
    ordered.sort_unstable();
    let n = ordered.len() as f64;
    ordered
        .into_iter()
        .enumerate()
        .map(|(i, (_, key, generation))| {
            (
                start + window.mul_f64((i as f64 + 0.5) / n),
                key,
                generation,
            )
        })
        .collect()
}

impl Core {
    /// Acts on the flags another thread sets (checked on every tick and doorbell): the shutdown, the
    /// handover (begin the drain), and while draining, the 1001s that are due.
    pub(super) fn follow_stop_flags(&mut self) {
        if self.shutting_down {
            return;
        }
        if self.shared.shutdown.load(Ordering::Acquire) {
            self.begin_shutdown();
        } else if self.drain.is_some() {
            self.close_due_drained();
        } else if self.shared.handed_over.load(Ordering::Acquire) {
            self.begin_drain();
        } else {
            self.rearm_accept_if_asked();
        }
    }

    /// The listeners are handed over: stop accepting and schedule a 1001 for every open connection, in a
    /// random order (a per-process random SipHash key), spread over `drain_window`.
    fn begin_drain(&mut self) {
        self.stop_accepting();
        // Submitted now: once counted, this worker's accepts wait on the sockets no more.
        self.submit_now();
        self.shared.accepts_stopped.fetch_add(1, Ordering::AcqRel);
        let start = now();
        let open: Vec<(usize, u32)> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.state == State::Open)
            .map(|(key, conn)| (key, conn.generation))
            .collect();
        let random = std::collections::hash_map::RandomState::new();
        let window = self.config.drain_window;
        tracing::info!(
            worker = self.index,
            connections = open.len(),
            window = ?window,
            "handed over: stopped accepting, closing connections over the drain window"
        );
        self.drain = Some(Drain {
            due: drain_schedule(&open, start, window, |key, generation| {
                random.hash_one((key, generation))
            }),
            ends_at: start + window,
        });
        self.close_due_drained();
    }

    /// Sends 1001 to the drained connections whose time has come (those still open: a connection may
    /// have closed, or its slot been reused, meanwhile); past the window, shuts down.
    fn close_due_drained(&mut self) {
        let now = now();
        let Some(ends_at) = self.drain.as_ref().map(|drain| drain.ends_at) else {
            return;
        };
        while let Some(drain) = self.drain.as_mut() {
            let Some(&(at, key, generation)) = drain.due.front() else {
                break;
            };
            if at > now {
                break;
            }
            drain.due.pop_front();
            let still_open = self
                .conns
                .get(key)
                .is_some_and(|conn| conn.generation == generation && conn.state == State::Open);
            if still_open {
                self.send_close(key, CloseCode::GOING_AWAY, "server restarting");
                self.leave_open(key, Some(CloseCode::GOING_AWAY));
            }
        }
        if now >= ends_at {
            self.begin_shutdown();
        }
    }

    pub(super) fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        self.shutdown_deadline = Some(now() + self.config.shutdown_timeout);
        self.stop_accepting();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_spreads_the_closes_uniformly_over_the_window_in_the_given_order() {
        let start = Instant::now();
        let window = Duration::from_secs(10);
        let conns: Vec<(usize, u32)> = (0..100).map(|key| (key, 1)).collect();
        // Reverse order: the last key first.
        let due = drain_schedule(&conns, start, window, |key, _| 1000 - key as u64);
        assert_eq!(due.len(), 100);
        assert_eq!(due.front().unwrap().1, 99);
        assert_eq!(due.back().unwrap().1, 0);
        // Every tenth of the window holds a tenth of the closes, all inside the window, earliest first.
        for tenth in 0..10 {
            let from = start + window / 10 * tenth;
            let to = from + window / 10;
            let count = due
                .iter()
                .filter(|(at, _, _)| *at >= from && *at < to)
                .count();
            assert_eq!(count, 10, "tenth {tenth}");
        }
        assert!(due.iter().zip(due.iter().skip(1)).all(|(a, b)| a.0 <= b.0));
        let mut keys: Vec<usize> = due.iter().map(|&(_, key, _)| key).collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..100).collect::<Vec<_>>(), "each connection once");
        assert!(drain_schedule(&[], start, window, |_, _| 0).is_empty());
    }

    #[test]
    fn a_random_order_is_not_the_order_of_the_slots() {
        let random = std::collections::hash_map::RandomState::new();
        let conns: Vec<(usize, u32)> = (0..64).map(|key| (key, 7)).collect();
        let due = drain_schedule(&conns, Instant::now(), Duration::from_secs(1), |k, g| {
            random.hash_one((k, g))
        });
        let keys: Vec<usize> = due.iter().map(|&(_, key, _)| key).collect();
        assert_ne!(keys, (0..64).collect::<Vec<_>>());
    }
}
