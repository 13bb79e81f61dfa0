//! Deadlines of connections: the periodic tick, the timer wheel's due entries and what each state does when
//! its deadline passes (handshake timeout, idle ping, ping timeout, message timeout, close timeout).
//!
//! The hot path never touches the wheel: a connection records its last activity as a plain store and is
//! looked at only when its entry comes due. Must never allocate per tick in steady state.
//!
//! The tick is one multishot timeout, re-armed whenever the kernel ends it (a full completion queue ends
//! multishot requests). Deadlines follow the monotonic clock, not the count of tick completions: each
//! completion moves the wheel to the whole number of intervals elapsed since the worker started, so a tick
//! that completes late (a long batch under load) catches up instead of stretching every timeout. Only the
//! tick reads the clock; the hot path never does. An idle event stream (`GET /sse`) gets a keep-alive
//! comment instead of a ping and is never waited on for an answer.

use std::time::{Duration, Instant};

use crate::server::config::ServerConfig;

use crate::protocol::frame::OpCode;
use crate::protocol::CloseCode;

use super::{Core, Worker};
use crate::reactor::{Completion, Op, UserData, NO_CONNECTION};
use crate::server::connection::{fanout_flags::EVENT_STREAM, flags::*, State};
use crate::server::handler::{Ctx, Handler};

/// What an idle event stream (`GET /sse`) gets each `--idle-timeout` instead of a ping: a comment, which
/// its client ignores.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The worker's clock: the monotonic clock; under `sim-ring`, the simulated ring's, which its driver moves.
pub(super) fn now() -> Instant {
    #[cfg(feature = "sim-ring")]
    return crate::reactor::sim::now();
    #[cfg(not(feature = "sim-ring"))]
    Instant::now()
}

pub(super) fn ticks(duration: Duration, tick: Duration) -> u32 {
    if duration.is_zero() {
        return 0;
    }
    (duration.as_nanos().div_ceil(tick.as_nanos())).clamp(1, u32::MAX as u128 / 4) as u32
}

/// A worker's periodic tick: its interval and the instant the wheel's tick 0 stands for.
pub(super) struct TickClock {
    interval: Duration,
    started: Instant,
}

impl TickClock {
    /// A clock whose tick 0 is now.
    pub(super) fn start(interval: Duration) -> TickClock {
        TickClock {
            interval,
            started: now(),
        }
    }
}

/// What a tick completion says about the multishot timeout behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TickArm {
    /// Still armed: more completions follow.
    Armed,
    /// The kernel ended it (an expiry posted without `IORING_CQE_F_MORE`, as when the completion queue
    /// is full): arm it again.
    Ended,
    /// Arming it failed with this errno: arming again would fail the same way, in a loop.
    Failed(i32),
}

/// Reads a tick completion's result and flags.
pub(super) fn tick_arm(result: i32, more: bool) -> TickArm {
    if more {
        TickArm::Armed
    } else if result == -libc::ETIME || result >= 0 {
        TickArm::Ended
    } else {
        TickArm::Failed(-result)
    }
}

/// The tick the wheel stands at `elapsed` after tick 0: the whole intervals elapsed, on the wheel's
/// wrapping counter, and never behind `now` (less than half the counter ahead of `now` is ahead).
pub(super) fn tick_target(now: u32, elapsed: Duration, interval: Duration) -> u32 {
    // Truncation to u32 is the counter's wrap.
    let elapsed_ticks = (elapsed.as_nanos() / interval.as_nanos().max(1)) as u32;
    if (elapsed_ticks.wrapping_sub(now) as i32) > 0 {
        elapsed_ticks
    } else {
        now
    }
}

/// The connection timeouts of one worker, in ticks of its wheel (0: idle pings are off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Deadlines {
    pub(super) handshake: u32,
    pub(super) idle: u32,
    pub(super) ping: u32,
    pub(super) close: u32,
    /// Time to finish a message once it started (0: no deadline).
    pub(super) message: u32,
}

impl Deadlines {
    pub(super) fn new(config: &ServerConfig, tick: Duration) -> Deadlines {
        Deadlines {
            handshake: ticks(config.handshake_timeout, tick),
            idle: ticks(config.idle_timeout, tick),
            ping: ticks(config.ping_timeout, tick),
            close: ticks(config.close_timeout, tick),
            message: ticks(config.message_timeout, tick),
        }
    }
}

/// What a connection's due timer entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerAction {
    /// Its deadline moved on (activity since, or a new state): check again at this tick.
    Reschedule(u32),
    /// The opening handshake did not complete in time: abort.
    HandshakeTimeout,
    /// Idle for the idle timeout: send a ping and wait for any sign of life.
    SendPing,
    /// Nothing arrived within the ping timeout after an idle ping: the connection is lost.
    PingTimeout,
    /// A message started and was not finished within the message timeout (control frames do not
    /// extend it): close with 1008.
    MessageTimeout,
    /// The closing handshake did not finish in time: abort.
    CloseTimeout,
    /// No deadline applies (an open connection with idle pings off).
    Nothing,
}

/// Whether tick `now` is at or past `due` (ticks wrap around).
fn reached(now: u32, due: u32) -> bool {
    (now.wrapping_sub(due) as i32) >= 0
}

/// Decides what the due timer entry of a connection in `state` does. `last_activity` is the tick of its
/// last received byte, `mid_message` whether a message (or frame) is in progress.
///
/// A connection has one entry, and every deadline but the idle one is fixed when it begins: the
/// handshake's at accept, the close's on entering [`State::Closing`] (`enter_closing`), the idle ping's
/// answer when the ping goes out, a message's when it starts (`Core::message_started`). Each of those
/// schedules the entry at exactly that deadline, in place of the one before, and nothing moves it until
/// the state changes again (which schedules the next): so when the entry of a connection in such a state
/// fires, that deadline has passed, and no start tick needs to be kept in the connection. Only the idle
/// deadline moves without the wheel (every received byte is a plain store of `last_activity` on the hot
/// path): its entry is checked against `last_activity` and scheduled again when bytes arrived since.
///
/// While a message is in progress and the message deadline is on, that deadline is the open connection's
/// only one: it is shorter than idle plus ping in any sane configuration, and bytes that keep arriving
/// (pings included) must not extend it. No idle ping is sent meanwhile (an idle ping is sent only between
/// messages; any received byte ends the wait for its answer).
pub(super) fn timer_action(
    state: State,
    awaiting_pong: bool,
    mid_message: bool,
    last_activity: u32,
    now: u32,
    deadlines: &Deadlines,
) -> TimerAction {
    match state {
        State::Handshake => TimerAction::HandshakeTimeout,
        State::Open if mid_message && deadlines.message != 0 => TimerAction::MessageTimeout,
        State::Open if deadlines.idle == 0 => TimerAction::Nothing,
        State::Open if awaiting_pong => TimerAction::PingTimeout,
        State::Open => {
            let due = last_activity.wrapping_add(deadlines.idle);
            if reached(now, due) {
                TimerAction::SendPing
            } else {
                TimerAction::Reschedule(due)
            }
        }
        State::Closing => TimerAction::CloseTimeout,
    }
}

impl<H: Handler> Worker<'_, H> {
    pub(super) fn on_tick(&mut self, completion: Completion) {
        match tick_arm(completion.result, completion.more()) {
            TickArm::Armed => {}
            TickArm::Ended => {
                self.core.metrics.tick_rearms.inc();
                self.core.arm_tick();
            }
            TickArm::Failed(errno) => {
                tracing::error!(
                    worker = self.core.index,
                    "the periodic tick failed ({}); timeouts stop on this worker",
                    std::io::Error::from_raw_os_error(errno)
                );
                return;
            }
        }
        let target = tick_target(
            self.core.wheel.now(),
            now().saturating_duration_since(self.core.tick.started),
            self.core.tick.interval,
        );
        // The scratch vector keeps its capacity from tick to tick.
        let mut due = std::mem::take(&mut self.core.timer_scratch);
        self.core.wheel.advance_to(target, &mut due);
        for key in due.drain(..) {
            self.core.on_timer(key);
        }
        self.core.timer_scratch = due;
        self.handler.on_tick(&mut Ctx {
            core: &mut self.core,
        });
        if self.core.pool.shrink_if_quiet(self.core.pool_quiet_ticks) {
            crate::reactor::sys::release_free_memory();
        }
        // Receive buffers unused for as long give their pages back (the simulated ring has none).
        self.core
            .bufs
            .release_unused(&self.core.ring, self.core.pool_quiet_ticks);
        self.core.arm_accept();
        // A lost doorbell delays the inbox by one tick at most.
        self.on_doorbell();
        self.core.follow_stop_flags();
    }
}

impl Core {
    /// Arms the periodic tick (a multishot timeout every interval).
    pub(super) fn arm_tick(&mut self) {
        let user_data = UserData::new(NO_CONNECTION, 0, Op::Tick).encode();
        self.ring.tick_every(self.tick.interval, user_data);
    }

    /// Sets the check of connection `key` at tick `due`, in place of the one it had.
    pub(super) fn schedule(&mut self, key: usize, due: u32) {
        self.wheel.schedule(key as u32, due);
    }

    /// Connection `key`'s entry came due (a released connection has none: `on_close_done` cancels it).
    pub(super) fn on_timer(&mut self, key: u32) {
        let key = key as usize;
        let now = self.wheel.now();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if self.wheel.due(key as u32).is_some() {
            return; // scheduled again since it came due, by an earlier entry of this tick: that one holds
        }
        let action = timer_action(
            conn.state,
            conn.has(AWAITING_PONG),
            conn.reader.is_mid_message(),
            conn.last_activity,
            now,
            &self.deadlines,
        );
        match action {
            TimerAction::Nothing => {}
            TimerAction::Reschedule(due) => self.schedule(key, due),
            TimerAction::HandshakeTimeout => {
                use crate::server::http::refusals;
                refusals::set_current_connection(Some(refusals::ConnRef {
                    key: key as u32,
                    generation: self.conns[key].generation,
                }));
                refusals::log_refusal(&refusals::Refusal::unanswered(self.index, "timeout"));
                refusals::set_current_connection(None);
                self.metrics.handshake_timeout();
                // Before the abort submits the close: the peer's address is read first.
                self.look_up_peers();
                self.abort(key);
            }
            TimerAction::SendPing if conn.has_fanout(EVENT_STREAM) => {
                // An event stream's client never answers: a comment keeps proxies and the client's
                // own timeout from ending a quiet stream, and the next one follows an idle interval on.
                self.metrics.event_stream_keepalives.inc();
                self.push_bytes(key, KEEP_ALIVE.len(), |out| {
                    out.extend_from_slice(KEEP_ALIVE)
                });
                self.schedule(key, now.wrapping_add(self.deadlines.idle));
            }
            TimerAction::SendPing => {
                conn.set(AWAITING_PONG);
                self.queue_frame(key, OpCode::Ping, b"");
                self.schedule(key, now.wrapping_add(self.deadlines.ping));
            }
            TimerAction::PingTimeout => {
                tracing::debug!(worker = self.index, "no answer to idle ping");
                self.lost(key);
            }
            TimerAction::MessageTimeout => {
                tracing::debug!(worker = self.index, "message timeout");
                self.metrics.message_timeouts.inc();
                self.close_unfinished(key, CloseCode::POLICY, "message timeout");
            }
            TimerAction::CloseTimeout => {
                let waiting = self.conns[key]
                    .tls_mut()
                    .is_some_and(|tls| std::mem::take(&mut tls.await_close_reply));
                if waiting {
                    // No close reply over TLS: close_notify and FIN now, and a new close deadline for
                    // the peer's EOF.
                    self.shut_after_flush(key);
                    self.enter_closing(key);
                } else {
                    self.abort(key);
                }
            }
        }
    }

    /// A message began on an open connection (its first fragment or the first part of a frame arrived):
    /// its deadline starts now and is the connection's entry until the message ends (see
    /// [`timer_action`]).
    pub(super) fn message_started(&mut self, key: usize) {
        if self.deadlines.message == 0 || self.conns[key].state != State::Open {
            return;
        }
        let due = self.wheel.now().wrapping_add(self.deadlines.message);
        self.schedule(key, due);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::timer::TimerWheel;

    const D: Deadlines = Deadlines {
        handshake: 100,
        idle: 300,
        ping: 300,
        close: 50,
        message: 0,
    };

    #[test]
    fn each_state_has_its_deadline() {
        use TimerAction::*;
        // A fixed deadline's entry fired: it passed (the entry is the deadline, see `timer_action`).
        assert_eq!(
            timer_action(State::Handshake, false, false, 10, 110, &D),
            HandshakeTimeout
        );
        assert_eq!(
            timer_action(State::Closing, true, false, 0, 95, &D),
            CloseTimeout
        );
        assert_eq!(
            timer_action(State::Open, true, false, 200, 800, &D),
            PingTimeout
        );
        // Open: a ping once idle for 300 ticks since the last byte, however old the entry is.
        assert_eq!(
            timer_action(State::Open, false, false, 200, 499, &D),
            Reschedule(500)
        );
        assert_eq!(
            timer_action(State::Open, false, false, 200, 500, &D),
            SendPing
        );
        assert_eq!(
            timer_action(State::Open, false, false, 200, 9000, &D),
            SendPing
        );
    }

    #[test]
    fn a_message_in_progress_has_its_own_deadline() {
        use TimerAction::*;
        let d = Deadlines { message: 40, ..D };
        // Its entry fired: bytes received meanwhile (pings) do not extend it.
        assert_eq!(
            timer_action(State::Open, false, true, 49, 50, &d),
            MessageTimeout
        );
        // It applies with idle pings off too.
        let no_idle = Deadlines { idle: 0, ..d };
        assert_eq!(
            timer_action(State::Open, false, true, 10, 50, &no_idle),
            MessageTimeout
        );
        // The message ended before its deadline: the idle deadline is back.
        assert_eq!(
            timer_action(State::Open, false, false, 49, 50, &d),
            Reschedule(349)
        );
        assert_eq!(
            timer_action(State::Open, false, false, 10, 50, &no_idle),
            Nothing
        );
        // Off (0): a message in progress only has the idle deadline.
        assert_eq!(
            timer_action(State::Open, false, true, 49, 50, &D),
            Reschedule(349)
        );
        // Other states ignore it.
        assert_eq!(
            timer_action(State::Closing, false, true, 10, 60, &d),
            CloseTimeout
        );
    }

    #[test]
    fn idle_pings_off_leave_open_connections_alone() {
        let off = Deadlines { idle: 0, ..D };
        for awaiting in [false, true] {
            assert_eq!(
                timer_action(State::Open, awaiting, false, 0, 1 << 20, &off),
                TimerAction::Nothing
            );
        }
        // The other states keep their deadlines.
        assert_eq!(
            timer_action(State::Handshake, false, false, 0, 100, &off),
            TimerAction::HandshakeTimeout
        );
    }

    #[test]
    fn the_idle_deadline_survives_the_tick_counter_wrapping() {
        let start = u32::MAX - 20;
        assert_eq!(
            timer_action(
                State::Open,
                false,
                false,
                start,
                start.wrapping_add(299),
                &D
            ),
            TimerAction::Reschedule(start.wrapping_add(300))
        );
        assert_eq!(
            timer_action(
                State::Open,
                false,
                false,
                start,
                start.wrapping_add(300),
                &D
            ),
            TimerAction::SendPing
        );
        // Long past it (but less than half the counter) is still past it.
        assert_eq!(
            timer_action(
                State::Open,
                false,
                false,
                start,
                start.wrapping_add(1 << 30),
                &D
            ),
            TimerAction::SendPing
        );
    }

    #[test]
    fn timeouts_round_up_to_whole_ticks() {
        let tick = Duration::from_millis(100);
        assert_eq!(ticks(Duration::ZERO, tick), 0);
        assert_eq!(ticks(Duration::from_millis(1), tick), 1);
        assert_eq!(ticks(Duration::from_millis(100), tick), 1);
        assert_eq!(ticks(Duration::from_millis(101), tick), 2);
        assert_eq!(ticks(Duration::from_secs(30), tick), 300);
        assert_eq!(ticks(Duration::MAX, tick), u32::MAX / 4);
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_target_tick_is_the_whole_intervals_elapsed() {
        let interval = 100 * MS;
        assert_eq!(tick_target(0, Duration::ZERO, interval), 0);
        assert_eq!(tick_target(0, 99 * MS, interval), 0);
        assert_eq!(tick_target(0, 100 * MS, interval), 1);
        // A late completion catches up several ticks at once.
        assert_eq!(tick_target(1, 350 * MS, interval), 3);
        assert_eq!(tick_target(3, Duration::from_secs(3600), interval), 36_000);
    }

    #[test]
    fn the_target_tick_never_goes_back() {
        let interval = 100 * MS;
        assert_eq!(tick_target(10, 500 * MS, interval), 10);
        assert_eq!(tick_target(10, 1000 * MS, interval), 10);
        assert_eq!(tick_target(10, 1100 * MS, interval), 11);
    }

    #[test]
    fn the_target_tick_wraps_with_the_counter() {
        let interval = 10 * MS;
        let lap = (1u64 << 32) * 10; // milliseconds in one wrap of the counter
        let elapsed = |ms: u64| Duration::from_millis(ms);
        // Just past the wrap: ahead of a tick just before it.
        assert_eq!(tick_target(u32::MAX - 2, elapsed(lap + 50), interval), 5);
        // Just before the wrap, with the wheel already past it: stays.
        assert_eq!(tick_target(5, elapsed(lap - 60), interval), 5);
        assert_eq!(
            tick_target(u32::MAX - 2, elapsed(lap - 10), interval),
            u32::MAX
        );
    }

    /// A worker's tick completions, each at `elapsed`: the wheel moved as `on_tick` moves it, and the
    /// entries fired at each, with the tick they fired at.
    fn run_ticks(
        wheel: &mut TimerWheel,
        interval: Duration,
        completions: &[Duration],
    ) -> Vec<(u32, u32)> {
        let mut fired = Vec::new();
        let mut out = Vec::new();
        for &elapsed in completions {
            wheel.advance_to(tick_target(wheel.now(), elapsed, interval), &mut out);
            fired.extend(out.drain(..).map(|key| (key, wheel.now())));
        }
        fired.sort();
        fired
    }

    #[test]
    fn late_and_early_completions_fire_each_entry_once_at_the_tick_of_the_clock() {
        let interval = 100 * MS;
        let mut wheel = TimerWheel::new();
        for key in 1..=10 {
            wheel.schedule(key, key);
        }
        // Two completions within tick 1, one 3 ticks late, one 6 ticks late.
        let fired = run_ticks(
            &mut wheel,
            interval,
            &[105 * MS, 150 * MS, 460 * MS, MS * 1000],
        );
        assert_eq!(
            fired,
            vec![
                (1, 1),
                (2, 4),
                (3, 4),
                (4, 4),
                (5, 10),
                (6, 10),
                (7, 10),
                (8, 10),
                (9, 10),
                (10, 10)
            ]
        );
    }

    #[test]
    fn a_handshake_deadline_holds_when_ticks_complete_late() {
        // A 10 s handshake timeout with a 100 ms tick; the worker is so busy that only three tick
        // completions arrive in 10.05 s. The deadline is still reached at 10 s of clock time.
        let interval = 100 * MS;
        let deadlines = Deadlines {
            handshake: 100,
            ..D
        };
        let mut wheel = TimerWheel::new();
        let since = wheel.now();
        wheel.schedule(1, since.wrapping_add(deadlines.handshake));
        let fired = run_ticks(&mut wheel, interval, &[MS * 4000, MS * 8000, MS * 10_050]);
        assert_eq!(fired, vec![(1, 100)]);
        assert_eq!(wheel.now(), since.wrapping_add(deadlines.handshake));
    }

    /// Every fixed deadline is the connection's timer entry from the moment it begins (what lets
    /// `timer_action` act on an entry without a start tick kept in the connection): a message's replaces
    /// the idle one and received bytes do not move it, an idle ping's answer replaces the idle one, the
    /// close deadline replaces whatever was there.
    #[test]
    fn each_fixed_deadline_becomes_the_connections_entry() {
        use super::super::tests::{open_connection, test_core};
        use crate::server::connection::flags::AWAITING_PONG;
        let mut core = test_core();
        core.deadlines = Deadlines {
            handshake: 100,
            idle: 300,
            ping: 30,
            close: 50,
            message: 40,
        };
        let key = open_connection(&mut core, 0);
        let entry = |core: &Core| core.wheel.due(key as u32);
        core.schedule(key, 300); // the idle deadline, as `opened` sets it
        core.message_started(key);
        assert_eq!(entry(&core), Some(40));
        core.conns[key].last_activity = 39;
        assert_eq!(entry(&core), Some(40), "received bytes do not move it");
        // Longer than the idle deadline, it still replaces it: mid-message it is the only one.
        core.deadlines.message = 1000;
        core.message_started(key);
        assert_eq!(entry(&core), Some(1000));
        // Off: a message leaves the idle entry alone.
        core.deadlines.message = 0;
        core.schedule(key, 300);
        core.message_started(key);
        assert_eq!(entry(&core), Some(300));
        // The idle entry fires with no byte since tick 0: a ping, and its answer's deadline is the entry.
        core.conns[key].last_activity = 0;
        let mut due = Vec::new();
        core.wheel.advance_to(300, &mut due);
        assert_eq!(due, vec![key as u32]);
        core.on_timer(key as u32);
        assert!(core.conns[key].has(AWAITING_PONG));
        assert_eq!(entry(&core), Some(330));
        assert!(core.conns[key].queued_bytes() > 0, "the ping is queued");
        // Closing: the close deadline, from now.
        core.enter_closing(key);
        assert_eq!(entry(&core), Some(350));
    }

    #[test]
    fn a_tick_completion_says_whether_to_arm_again() {
        assert_eq!(tick_arm(-libc::ETIME, true), TickArm::Armed);
        assert_eq!(tick_arm(-libc::ETIME, false), TickArm::Ended);
        assert_eq!(tick_arm(0, false), TickArm::Ended);
        assert_eq!(
            tick_arm(-libc::EINVAL, false),
            TickArm::Failed(libc::EINVAL)
        );
    }

    /// Drains `ring` until a completion without `IORING_CQE_F_MORE` shows up (or `limit` passes).
    fn wait_for_end(ring: &mut crate::reactor::ring::Ring, limit: Duration) -> Vec<Completion> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            ring.drain_completions(&mut seen);
            if seen.iter().any(|c| !c.more()) {
                break;
            }
            // Flushes completions the kernel kept while the queue was full.
            ring.submit_and_wait(0).expect("io_uring_enter");
            std::thread::sleep(MS);
        }
        seen
    }

    #[test]
    fn a_tick_the_kernel_ends_on_a_full_completion_queue_is_armed_again() {
        // A real ring with a two-entry completion queue and a 1 ms tick, its completions left unread:
        // once the queue is full the kernel cannot post the next expiry and ends the multishot timeout.
        let mut ring = crate::reactor::ring::Ring::new(2, 2, 1).expect("io_uring setup");
        let tick = 7;
        ring.tick_every(MS, tick);
        for _ in 0..10 {
            std::thread::sleep(2 * MS);
            ring.submit_and_wait(1).expect("io_uring_enter"); // runs the timer's deferred work
        }
        let seen = wait_for_end(&mut ring, Duration::from_secs(5));
        let (last, before) = seen.split_last().expect("tick completions");
        assert!(
            !last.more(),
            "the kernel kept the tick armed through a full completion queue: {seen:?}"
        );
        assert!(before
            .iter()
            .all(|c| c.user_data == tick && tick_arm(c.result, c.more()) == TickArm::Armed));
        assert_eq!(last.user_data, tick);
        assert_eq!(tick_arm(last.result, last.more()), TickArm::Ended);

        // Armed again as `on_tick` does, it ticks on.
        ring.tick_every(MS, tick);
        let mut again = Vec::new();
        while again.len() < 3 {
            ring.submit_and_wait(1).expect("io_uring_enter");
            ring.drain_completions(&mut again);
        }
        assert!(again
            .iter()
            .all(|c| c.user_data == tick && tick_arm(c.result, c.more()) == TickArm::Armed));
    }
}
