//! Deadlines of connections: the periodic tick, the timer wheel's due entries and what each state does when
//! its deadline passes (handshake timeout, idle ping, ping timeout, close timeout).
//!
//! The hot path never touches the wheel: a connection records its last activity as a plain store and is
//! looked at only when its entry comes due. Must never allocate per tick in steady state.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::protocol::frame::OpCode;

use super::{Core, Worker};
use crate::server::connection::{flags::*, State};
use crate::server::handler::Handler;
use crate::server::timer::TimerEntry;

pub(super) fn ticks(duration: Duration, tick: Duration) -> u32 {
    if duration.is_zero() {
        return 0;
    }
    (duration.as_nanos().div_ceil(tick.as_nanos())).clamp(1, u32::MAX as u128 / 4) as u32
}

impl<H: Handler> Worker<'_, H> {
    pub(super) fn on_tick(&mut self) {
        // The scratch vector keeps its capacity from tick to tick.
        let mut due = std::mem::take(&mut self.core.timer_scratch);
        self.core.wheel.advance(&mut due);
        for entry in due.drain(..) {
            self.core.on_timer(entry);
        }
        self.core.timer_scratch = due;
        if self.core.pool.shrink_if_quiet(self.core.pool_quiet_ticks) {
            crate::reactor::sys::release_free_memory();
        }
        self.core.arm_accept();
        if !self.core.shutting_down && self.core.shared.shutdown.load(Ordering::Acquire) {
            self.core.begin_shutdown();
        }
    }
}

impl Core {
    pub(super) fn schedule(&mut self, key: usize, due: u32) {
        let conn = &mut self.conns[key];
        conn.timer_at = due;
        let generation = conn.generation;
        self.wheel.schedule(key as u32, generation, due);
    }

    pub(super) fn on_timer(&mut self, entry: TimerEntry) {
        let key = entry.key as usize;
        let now = self.wheel.now();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.generation != entry.generation || conn.timer_at != entry.due {
            return; // stale: the connection was rescheduled or the slot reused
        }
        match conn.state {
            State::Handshake => {
                let due = conn.since.wrapping_add(self.handshake_ticks);
                if (now.wrapping_sub(due) as i32) >= 0 {
                    tracing::debug!(worker = self.index, "handshake timeout");
                    self.metrics.handshake_timeout();
                    self.abort(key);
                } else {
                    self.schedule(key, due);
                }
            }
            State::Open => {
                if self.idle_ticks == 0 {
                    return;
                }
                if conn.has(AWAITING_PONG) {
                    let due = conn.since.wrapping_add(self.ping_ticks);
                    if (now.wrapping_sub(due) as i32) >= 0 {
                        tracing::debug!(worker = self.index, "no answer to idle ping");
                        self.lost(key);
                    } else {
                        self.schedule(key, due);
                    }
                } else {
                    let due = conn.last_activity.wrapping_add(self.idle_ticks);
                    if (now.wrapping_sub(due) as i32) >= 0 {
                        conn.set(AWAITING_PONG);
                        conn.since = now;
                        self.queue_frame(key, OpCode::Ping, b"");
                        self.schedule(key, now.wrapping_add(self.ping_ticks));
                    } else {
                        self.schedule(key, due);
                    }
                }
            }
            State::Closing => {
                let due = conn.since.wrapping_add(self.close_ticks);
                if (now.wrapping_sub(due) as i32) >= 0 {
                    self.abort(key);
                } else {
                    self.schedule(key, due);
                }
            }
        }
    }
}
