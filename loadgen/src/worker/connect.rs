//! Getting a connection open: the connect queue (at most `--max-pending-connects` attempts at once),
//! the engine's connect, the TLS state and the upgrade request once TCP is up, the check of the server's
//! answer, and what a failed attempt leads to (counted by cause; a retry after an exponential backoff
//! with jitter, the next churn cycle, or giving up).
//!
//! Runs once per connection attempt, never per message, and never makes a socket call itself (the
//! engine does). It must never count a connection as open before the server's 101 was checked.

use super::{Behaviour, State, Worker};
use crate::engine::{Engine, NO_SOCK};
use crate::plan::{Backoff, Phase};
use crate::stats::Counter;
use crate::tls::TlsConn;
use crate::wire::{self, HandshakeFailure, MessageReader, Rng};
use std::io;

/// The counter for a failed connect, by errno.
pub(super) fn connect_error_counter(err: &io::Error) -> Counter {
    match err.raw_os_error() {
        Some(libc::ECONNREFUSED) => Counter::ConnectRefused,
        Some(libc::ETIMEDOUT) => Counter::ConnectTimeout,
        Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => Counter::AddrNotAvailable,
        Some(libc::EMFILE) | Some(libc::ENFILE) => Counter::FdLimit,
        Some(libc::ECONNRESET) | Some(libc::EPIPE) => Counter::Reset,
        _ => Counter::ConnectOther,
    }
}

/// The counter for an upgrade the server refused or answered wrongly.
fn handshake_failure_counter(failure: HandshakeFailure) -> Counter {
    match failure {
        HandshakeFailure::Status(503) => Counter::HandshakeRejected503,
        HandshakeFailure::Status(_) => Counter::HandshakeRejectedOther,
        HandshakeFailure::Invalid => Counter::HandshakeInvalid,
    }
}

/// The longest wait before reconnect number `attempts + 1` of a connection: the base (100 ms unless
/// `--backoff-base`), doubling with each attempt, at most the cap (5 s unless `--backoff-cap`).
fn backoff_window_ns(attempts: u32, backoff: &Backoff) -> u64 {
    backoff
        .base_ns
        .saturating_mul(1u64 << attempts.min(40))
        .min(backoff.cap_ns)
}

/// The wait before reconnect number `attempts + 1`: anywhere in the upper half of the backoff window, or
/// with full jitter anywhere in it (so that connections dropped together do not come back together).
fn reconnect_delay_ns(attempts: u32, backoff: &Backoff, rng: &mut Rng) -> u64 {
    let ceiling = backoff_window_ns(attempts, backoff);
    if backoff.full_jitter {
        rng.below(ceiling)
    } else {
        ceiling / 2 + rng.below(ceiling / 2 + 1)
    }
}

impl<E: Engine> Worker<E> {
    /// Starts the queued connects that are due, as long as fewer than `--max-pending-connects` are under
    /// way (during the drain, due ones are dropped from the queue instead).
    pub(super) fn start_due_connects(&mut self, now: u64) {
        while self.pending_connects < self.plan.max_pending_connects {
            let Some(&(due, i)) = self.connect_queue.front() else {
                break;
            };
            if due > now {
                break;
            }
            self.connect_queue.pop_front();
            if self.phase == Phase::Drain {
                continue;
            }
            self.start_connect(i as usize, now);
        }
    }

    /// Asks the engine to connect connection `i` to its `--url` (`Plan::url_of`), from its share of
    /// `--source-ips`, with a timeout.
    fn start_connect(&mut self, i: usize, now: u64) {
        let source = match self.plan.source_ips.len() {
            0 => None,
            n => Some(self.plan.source_ips[self.conns[i].gid as usize % n]),
        };
        self.counters.inc(Counter::ConnectAttempts);
        if self.conns[i].behaviour == Behaviour::Churn {
            self.conns[i].traffic.cycle_start_ns = now;
            self.active_cycles += 1;
        }
        let target = self.plan.url_of(self.conns[i].gid as u64);
        match self.io.connect(i as u32, target, source) {
            Ok(sock) => {
                let held = self.io.sockets() as u64;
                if held > self.counters.get(Counter::SocketsMax) {
                    self.counters.add(
                        Counter::SocketsMax,
                        held - self.counters.get(Counter::SocketsMax),
                    );
                }
                let conn = &mut self.conns[i];
                conn.sock = sock;
                conn.state = State::Connecting;
                self.pending_connects += 1;
                self.set_timer(i, now + self.plan.connect_timeout_ns);
            }
            Err(err) => {
                self.pending_connects += 1;
                self.conns[i].state = State::Connecting;
                self.connect_failed(i, connect_error_counter(&err), now);
            }
        }
    }

    /// A connect or handshake failed: count it, then retry (backoff) or give up.
    pub(super) fn connect_failed(&mut self, i: usize, reason: Counter, now: u64) {
        self.counters.inc(reason);
        self.pending_connects -= 1;
        let conn = &mut self.conns[i];
        if conn.sock != NO_SOCK {
            conn.out.clear();
            // The alert rustls queued for a failed TLS handshake tells the server why (best effort).
            let last_words: &[u8] = match conn.tls.as_deref_mut() {
                Some(tls) => match tls.seal(&mut conn.out) {
                    Ok(()) => &tls.cipher,
                    Err(_) => &[],
                },
                None => &[],
            };
            self.io.close(conn.sock, last_words);
            conn.sock = NO_SOCK;
        }
        conn.tls = None;
        conn.handshake = None;
        conn.out.clear();
        conn.state = State::Waiting;
        conn.timer_due = 0;
        if conn.behaviour == Behaviour::Churn {
            self.active_cycles -= 1;
            self.schedule_next_cycle(i, now);
            return;
        }
        if self.plan.reconnect && self.phase != Phase::Drain {
            self.schedule_reconnect(i, now);
        } else {
            self.conns[i].state = State::Dead;
            self.leave_ramp(i);
        }
    }

    /// Connection `i` waits for its backoff, then joins the connect queue again.
    pub(super) fn schedule_reconnect(&mut self, i: usize, now: u64) {
        let attempts = self.conns[i].attempts;
        self.conns[i].attempts += 1;
        let delay = reconnect_delay_ns(attempts, &self.plan.backoff, &mut self.rng);
        self.counters.inc(Counter::Reconnects);
        self.conns[i].state = State::Waiting;
        self.set_timer(i, now + delay);
    }

    /// TCP is up on connection `i`: set up its TLS state (wss://) and queue the upgrade request.
    pub(super) fn on_connected(&mut self, i: usize, now: u64) {
        if let Some(plan) = &self.plan.tls {
            match TlsConn::new(plan) {
                Ok(tls) => self.conns[i].tls = Some(Box::new(tls)),
                Err(_) => {
                    self.connect_failed(i, Counter::TlsHandshake, now);
                    return;
                }
            }
        }
        let conn = &mut self.conns[i];
        conn.state = State::Handshaking;
        conn.out.clear();
        let url = self.plan.url_of(conn.gid as u64);
        let path = match conn.behaviour {
            Behaviour::Subscriber => &self.plan.subscriber_paths[url],
            _ => &self.plan.targets[url].path,
        };
        let handshake = wire::start_handshake(
            &mut conn.out,
            &self.plan.targets[url].host,
            path,
            self.plan.deflate.as_ref(),
            &mut self.rng,
        );
        conn.handshake = Some(Box::new(handshake));
        self.mark_dirty(i);
    }

    /// Checks the server's answer gathered so far: once it is a valid 101, the connection opens (its
    /// traffic starts if the run is on, and bytes after the answer go to the message reader); a refusal
    /// or a wrong answer fails the attempt.
    pub(super) fn check_handshake_response(&mut self, i: usize, now: u64) {
        let Some(handshake) = self.conns[i].handshake.as_mut() else {
            return;
        };
        match handshake.check() {
            Ok(None) => {}
            Ok(Some(opened)) => {
                let mut handshake = self.conns[i]
                    .handshake
                    .take()
                    .expect("handshake in progress");
                self.pending_connects -= 1;
                self.counters.inc(Counter::Connected);
                self.counters.inc(Counter::Open);
                let conn = &mut self.conns[i];
                conn.state = State::Open;
                conn.attempts = 0;
                conn.timer_due = 0;
                conn.reader = MessageReader::new(self.plan.reader_role);
                if let Some(inflater) = conn.inflating.take() {
                    self.inflate_pool.give(inflater);
                }
                if opened.deflate.is_on() {
                    conn.reader.set_deflate(opened.deflate);
                    self.counters.inc(Counter::DeflateAgreed);
                }
                conn.traffic.in_flight.clear();
                conn.traffic.next_send_seq = 0;
                conn.traffic.next_recv_seq = 0;
                self.leave_ramp(i);
                // During the drain a churn cycle already under way still runs to its end.
                let behaviour = self.conns[i].behaviour;
                if self.phase >= Phase::Run
                    && (self.phase != Phase::Drain || behaviour == Behaviour::Churn)
                {
                    self.start_traffic(i, now);
                }
                if handshake.response.len() > opened.consumed {
                    self.on_frames(i, None, &mut handshake.response[opened.consumed..], now);
                }
            }
            Err(failure) => self.connect_failed(i, handshake_failure_counter(failure), now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_waits_anywhere_in_a_window_of_the_given_base_and_cap() {
        let backoff = Backoff {
            base_ns: 500_000_000,
            cap_ns: 30_000_000_000,
            full_jitter: true,
        };
        let ms = |attempts| backoff_window_ns(attempts, &backoff) / 1_000_000;
        assert_eq!(
            (0..8).map(ms).collect::<Vec<_>>(),
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        let mut rng = Rng::new(3);
        let delays: Vec<u64> = (0..2000)
            .map(|_| reconnect_delay_ns(2, &backoff, &mut rng))
            .collect();
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*max < 2_000_000_000, "within the window: {max}");
        assert!(*min < 100_000_000, "from near 0: {min}");
        assert!(*max > 1_900_000_000, "to near the window: {max}");
    }

    #[test]
    fn backoff_window_doubles_from_100ms_up_to_5s() {
        let ms = |attempts| backoff_window_ns(attempts, &Backoff::default()) / 1_000_000;
        let windows: Vec<u64> = (0..9).map(ms).collect();
        assert_eq!(windows, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // However many attempts failed, the shift never overflows and the cap holds.
        assert_eq!(ms(u32::MAX), 5000);
    }

    #[test]
    fn reconnect_delay_stays_in_the_upper_half_of_the_window_and_varies() {
        let mut rng = Rng::new(7);
        for attempts in [0, 1, 3, 6, 20] {
            let window = backoff_window_ns(attempts, &Backoff::default());
            let delays: Vec<u64> = (0..2000)
                .map(|_| reconnect_delay_ns(attempts, &Backoff::default(), &mut rng))
                .collect();
            let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
            assert!(*min >= window / 2 && *max <= window, "attempts {attempts}");
            // Jitter: the delays spread over most of the half window.
            assert!(
                *min < window / 2 + window / 20,
                "attempts {attempts}: min {min}"
            );
            assert!(
                *max > window - window / 20,
                "attempts {attempts}: max {max}"
            );
        }
    }

    #[test]
    fn connect_errors_map_to_their_counters() {
        let counter = |errno| connect_error_counter(&io::Error::from_raw_os_error(errno));
        assert_eq!(counter(libc::ECONNREFUSED), Counter::ConnectRefused);
        assert_eq!(counter(libc::ETIMEDOUT), Counter::ConnectTimeout);
        assert_eq!(counter(libc::EADDRNOTAVAIL), Counter::AddrNotAvailable);
        assert_eq!(counter(libc::EADDRINUSE), Counter::AddrNotAvailable);
        assert_eq!(counter(libc::EMFILE), Counter::FdLimit);
        assert_eq!(counter(libc::ENFILE), Counter::FdLimit);
        assert_eq!(counter(libc::ECONNRESET), Counter::Reset);
        assert_eq!(counter(libc::EPIPE), Counter::Reset);
        assert_eq!(counter(libc::EHOSTUNREACH), Counter::ConnectOther);
        let no_errno = io::Error::other("no errno");
        assert_eq!(connect_error_counter(&no_errno), Counter::ConnectOther);
    }

    #[test]
    fn handshake_failures_map_to_their_counters() {
        assert_eq!(
            handshake_failure_counter(HandshakeFailure::Status(503)),
            Counter::HandshakeRejected503
        );
        for status in [200, 400, 404, 426, 500, 502] {
            assert_eq!(
                handshake_failure_counter(HandshakeFailure::Status(status)),
                Counter::HandshakeRejectedOther
            );
        }
        assert_eq!(
            handshake_failure_counter(HandshakeFailure::Invalid),
            Counter::HandshakeInvalid
        );
    }
}
