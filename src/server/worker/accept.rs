//! Admission: the worker's accept on its own SO_REUSEPORT listener, into the ring's fixed-file table.
//!
//! Owns when an accept is armed (multishot below the limit, one single-shot at a time in the table's
//! reserve), what an accepted connection starts with (a slab slot, a receive, TLS state, the handshake
//! deadline) and the 503 answer from the reserve. Must never let the fixed-file table overflow (an accept into
//! a full table drops the client and ends the multishot) and never spin on a failing accept, nor log every
//! failure: accept errors are logged at most once a second, each line with the count since the last one
//! ([`LogRateLimit`], pure: the caller passes the time in).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::reactor::{Completion, Op, UserData};

use super::Core;
use crate::reactor::NO_CONNECTION;
use crate::server::connection::{flags::*, Connection};
use crate::server::http;
use crate::server::http::refusals::{log_refusal, Refusal, Severity};
use crate::server::metrics::{REJECT_SHUTTING_DOWN, REJECT_TABLE_FULL};

/// What the accept decision looks at.
#[derive(Debug, Clone, Copy)]
struct AcceptState {
    /// Connections held (any state, refused ones in the reserve included).
    held: usize,
    /// Connections this worker serves.
    max_conns: usize,
    /// Slots of the fixed-file table (`max_conns` plus the reserve).
    table_size: usize,
    multishot_armed: bool,
    multishot_cancelling: bool,
    /// Single-shot accepts in flight.
    single_accepts: usize,
}

/// The next accept operation to submit, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptStep {
    /// Nothing to do now (an accept is armed, being cancelled, or the table is full): a released
    /// connection or the next tick asks again.
    Wait,
    /// Below the limit and nothing armed: arm the multishot accept.
    ArmMultishot,
    /// At the limit with the multishot armed: cancel it (accepts go one at a time from here).
    CancelMultishot,
    /// At the limit, in the reserve: one single-shot accept, so that each accept has a free slot.
    ArmOne,
}

/// Keeps accepting within the fixed-file table: a multishot accept while below `max_conns`; from there
/// (the table's reserve, where clients are answered 503) one single-shot accept at a time and only while
/// a slot is free, so that the table never overflows (an accept into a full table fails and drops the
/// client). New clients then wait in the listen backlog until a slot frees.
fn next_accept_step(state: &AcceptState) -> AcceptStep {
    if state.held < state.max_conns {
        if !state.multishot_armed && state.single_accepts == 0 {
            return AcceptStep::ArmMultishot;
        }
        return AcceptStep::Wait;
    }
    if state.multishot_armed {
        if state.multishot_cancelling {
            return AcceptStep::Wait;
        }
        return AcceptStep::CancelMultishot;
    }
    if state.single_accepts == 0 && state.held < state.table_size {
        return AcceptStep::ArmOne;
    }
    AcceptStep::Wait
}

/// At most one log line per `interval` for an event that can repeat without end (a failing accept), each
/// line carrying how many events it stands for. Pure: the time is passed in, it reads no clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogRateLimit {
    interval: Duration,
    /// When the last line went out (`None`: never).
    last_line: Option<Instant>,
    /// Events since the last line.
    unlogged: u64,
}

impl LogRateLimit {
    pub(super) const fn new(interval: Duration) -> LogRateLimit {
        LogRateLimit {
            interval,
            last_line: None,
            unlogged: 0,
        }
    }

    /// Records one event at `now`. `Some(count)` when a line is due (the first event, or `interval` after the
    /// last line): the events since the last line, this one included. `None`: counted, stay quiet.
    fn record(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last_line
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// How often a worker may log accept errors.
pub(super) const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(1);

impl Core {
    /// Stops accepting for good (a shutdown, or a handover to another process): cancels the accepts in
    /// flight and closes this worker's descriptor of its listener. The socket itself closes only with its
    /// last descriptor: after a handover the new process holds it, with its accept queue. An accept that
    /// completes after this is still served (`on_accept`); nothing is armed again.
    pub(super) fn stop_accepting(&mut self) {
        if self.accept_armed {
            self.ring.cancel(
                UserData::new(NO_CONNECTION, 0, Op::AcceptMulti).encode(),
                UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
            );
        }
        if self.single_accepts > 0 {
            self.ring.cancel(
                UserData::new(NO_CONNECTION, 0, Op::AcceptOne).encode(),
                UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
            );
        }
        if let Some(listener) = self.listener.take() {
            let fd = listener.as_raw_fd();
            std::mem::forget(listener);
            self.ring
                .close_fd(fd, UserData::new(NO_CONNECTION, 0, Op::Ignore).encode());
        }
    }

    /// Arms the accepts again when asked ([`crate::server::ServerHandle::rearm_accepts`]): cancels the
    /// accepts in flight; their completion (ECANCELED) arms new ones, whose first attempt takes what
    /// waits in the listen queue without waiting for a wakeup.
    pub(super) fn rearm_accept_if_asked(&mut self) {
        let asked = self
            .shared
            .accept_rearms
            .load(std::sync::atomic::Ordering::Acquire);
        if asked == self.accept_rearms_seen {
            return;
        }
        self.accept_rearms_seen = asked;
        if self.accept_armed && !self.accept_cancelling {
            self.accept_cancelling = true;
            self.ring.cancel(
                UserData::new(NO_CONNECTION, 0, Op::AcceptMulti).encode(),
                UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
            );
        }
        if self.single_accepts > 0 {
            self.ring.cancel(
                UserData::new(NO_CONNECTION, 0, Op::AcceptOne).encode(),
                UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
            );
        }
    }

    /// Submits the accept operation [`next_accept_step`] asks for (nothing while shutting down).
    pub(super) fn arm_accept(&mut self) {
        if self.shutting_down {
            return;
        }
        let Some(listener) = &self.listener else {
            return;
        };
        let fd = listener.as_raw_fd();
        let step = next_accept_step(&AcceptState {
            held: self.conns.len(),
            max_conns: self.max_conns,
            table_size: self.table_size,
            multishot_armed: self.accept_armed,
            multishot_cancelling: self.accept_cancelling,
            single_accepts: self.single_accepts,
        });
        match step {
            AcceptStep::Wait => {}
            AcceptStep::ArmMultishot => {
                self.ring.accept_multishot(
                    fd,
                    UserData::new(NO_CONNECTION, 0, Op::AcceptMulti).encode(),
                );
                self.accept_armed = true;
            }
            AcceptStep::CancelMultishot => {
                self.accept_cancelling = true;
                self.ring.cancel(
                    UserData::new(NO_CONNECTION, 0, Op::AcceptMulti).encode(),
                    UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
                );
            }
            AcceptStep::ArmOne => {
                self.single_accepts += 1;
                self.ring
                    .accept_one(fd, UserData::new(NO_CONNECTION, 0, Op::AcceptOne).encode());
            }
        }
    }

    pub(super) fn on_accept(&mut self, single: bool, completion: Completion) {
        if single {
            self.single_accepts -= 1;
        } else if !completion.more() {
            self.accept_armed = false;
            self.accept_cancelling = false;
        }
        if completion.result < 0 {
            let errno = -completion.result;
            if errno != libc::ECANCELED {
                self.metrics.accept_errors.inc();
                if errno == libc::ENFILE || errno == libc::EMFILE {
                    self.metrics.rejected[REJECT_TABLE_FULL].inc();
                }
                if let Some(count) = self.accept_error_log.record(super::timers::now()) {
                    let error = std::io::Error::from_raw_os_error(errno);
                    let held = self.conns.len();
                    // The first line of this worker explains the retry; later ones count.
                    if count != 1 || self.metrics.accept_errors.get() > 1 {
                        tracing::warn!(
                            worker = self.index,
                            "accept failed: {error} ({held} connections held); {count} accept errors since the last line"
                        );
                    } else {
                        tracing::warn!(
                            worker = self.index,
                            "accept failed: {error} ({held} connections held); retried on the next tick or freed slot (accept errors are logged at most once a second, with their count)"
                        );
                    }
                }
                // Not re-armed here (no spinning): a released connection or the next tick re-arms it.
                return;
            }
            self.arm_accept();
            return;
        }
        let file_index = completion.result as u32;
        self.metrics.connections_total.inc();
        self.metrics.connections_open.inc();
        let generation = self.next_generation;
        self.next_generation =
            self.next_generation.wrapping_add(1) & crate::reactor::GENERATION_MASK;
        let now = self.wheel.now();
        let key = self
            .conns
            .insert(Connection::new(file_index, generation, now));
        self.arm_recv(key);
        if let Some(tls_config) = &self.config.tls {
            match crate::server::tls::TlsState::new(tls_config) {
                Ok(tls) => self.conns[key].put_tls(Box::new(tls)),
                Err(error) => {
                    tracing::debug!(worker = self.index, "TLS setup failed: {error}");
                    self.metrics.tls_failures.inc();
                    self.abort(key);
                    self.arm_accept();
                    return;
                }
            }
        }
        crate::server::http::refusals::set_current_connection(Some(
            crate::server::http::refusals::ConnRef {
                key: key as u32,
                generation,
            },
        ));
        if self.shutting_down {
            self.metrics.rejected[REJECT_SHUTTING_DOWN].inc();
            log_refusal(&Refusal {
                severity: Severity::Limit,
                ..Refusal::new(self.index, 503, "shutting_down")
            });
            self.answer_http(key, http::write_503);
        } else if self.conns.len() - self.rejected_in_reserve > self.max_conns {
            // Over this worker's limit: answer from the table's reserve and close.
            self.metrics.rejected[REJECT_TABLE_FULL].inc();
            log_refusal(&Refusal {
                severity: Severity::Limit,
                ..Refusal::new(self.index, 503, "table_full")
            });
            self.conns[key].set(REJECTED);
            self.rejected_in_reserve += 1;
            self.answer_http(key, http::write_503);
        } else {
            self.schedule(key, now.wrapping_add(self.deadlines.handshake));
        }
        crate::server::http::refusals::set_current_connection(None);
        self.arm_accept();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_logged_at_most_once_a_second_with_their_count() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut limit = LogRateLimit::new(Duration::from_secs(1));
        assert_eq!(
            limit.record(at(0)),
            Some(1),
            "the first error is logged at once"
        );
        for ms in [1, 100, 500, 999] {
            assert_eq!(limit.record(at(ms)), None, "{ms} ms");
        }
        assert_eq!(
            limit.record(at(1000)),
            Some(5),
            "a second later, with the count"
        );
        assert_eq!(limit.record(at(1999)), None);
        assert_eq!(
            limit.record(at(10_000)),
            Some(2),
            "a quiet spell ends with the next error"
        );
        assert_eq!(limit.record(at(10_000)), None);
        // A time before the last line (never from a monotonic clock) keeps it quiet rather than panicking.
        assert_eq!(limit.record(at(5_000)), None);
        assert_eq!(limit.record(at(11_000)), Some(3));
    }

    fn state(held: usize) -> AcceptState {
        AcceptState {
            held,
            max_conns: 10,
            table_size: 14,
            multishot_armed: false,
            multishot_cancelling: false,
            single_accepts: 0,
        }
    }

    #[test]
    fn below_the_limit_one_multishot_accept_is_kept_armed() {
        assert_eq!(next_accept_step(&state(0)), AcceptStep::ArmMultishot);
        assert_eq!(next_accept_step(&state(9)), AcceptStep::ArmMultishot);
        let armed = AcceptState {
            multishot_armed: true,
            ..state(5)
        };
        assert_eq!(next_accept_step(&armed), AcceptStep::Wait);
        // A single-shot accept still in flight (back below the limit) completes first.
        let single = AcceptState {
            single_accepts: 1,
            ..state(9)
        };
        assert_eq!(next_accept_step(&single), AcceptStep::Wait);
    }

    #[test]
    fn at_the_limit_the_multishot_is_cancelled_once() {
        let armed = AcceptState {
            multishot_armed: true,
            ..state(10)
        };
        assert_eq!(next_accept_step(&armed), AcceptStep::CancelMultishot);
        let cancelling = AcceptState {
            multishot_cancelling: true,
            ..armed
        };
        assert_eq!(next_accept_step(&cancelling), AcceptStep::Wait);
    }

    #[test]
    fn in_the_reserve_accepts_go_one_at_a_time_and_stop_when_the_table_is_full() {
        assert_eq!(next_accept_step(&state(10)), AcceptStep::ArmOne);
        assert_eq!(next_accept_step(&state(13)), AcceptStep::ArmOne);
        let in_flight = AcceptState {
            single_accepts: 1,
            ..state(11)
        };
        assert_eq!(next_accept_step(&in_flight), AcceptStep::Wait);
        assert_eq!(next_accept_step(&state(14)), AcceptStep::Wait);
    }
}
