//! A hashed timer wheel driven by the worker's periodic tick.
//!
//! The wheel has no clock of its own: the worker tells it which tick it is (`advance_to`, from the
//! monotonic clock on each tick completion), and a late tick catches up, firing every entry due in between
//! exactly once.
//!
//! Entries are (connection key, generation, due tick). The hot path never touches the wheel: a
//! connection records its last activity as a plain store, and only when its entry comes due does the
//! worker look at it and either act (timeout) or push a new entry for the next deadline. An entry whose
//! connection is gone or was rescheduled is recognised as stale and dropped. This module knows nothing of
//! connections; it must never allocate per tick in steady state (bucket vectors keep their capacity).

/// One scheduled check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerEntry {
    pub key: u32,
    pub generation: u32,
    pub due: u32,
}

pub struct TimerWheel {
    buckets: Vec<Vec<TimerEntry>>,
    now: u32,
}

const BUCKETS: usize = 1024;

impl Default for TimerWheel {
    fn default() -> Self {
        TimerWheel::new()
    }
}

impl TimerWheel {
    pub fn new() -> TimerWheel {
        TimerWheel {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            now: 0,
        }
    }

    /// The current tick.
    pub fn now(&self) -> u32 {
        self.now
    }

    /// Schedules a check of `key` at tick `due` (at the earliest the next tick; ticks wrap around, so
    /// "earlier" means less than half the counter behind).
    pub fn schedule(&mut self, key: u32, generation: u32, due: u32) {
        let next = self.now.wrapping_add(1);
        let due = if (due.wrapping_sub(next) as i32) < 0 {
            next
        } else {
            due
        };
        self.buckets[due as usize % BUCKETS].push(TimerEntry {
            key,
            generation,
            due,
        });
    }

    /// Advances one tick and moves the entries now due into `out` (entries of the same bucket due in a
    /// later lap stay).
    pub fn advance(&mut self, out: &mut Vec<TimerEntry>) {
        self.now = self.now.wrapping_add(1);
        let now = self.now;
        take_due(&mut self.buckets[now as usize % BUCKETS], now, out);
    }

    /// Advances to tick `target` and moves every entry due up to it into `out`, each once. A target at or
    /// behind the current tick (in the wrapping sense: less than half the counter ahead) changes nothing:
    /// the wheel never goes back.
    pub fn advance_to(&mut self, target: u32, out: &mut Vec<TimerEntry>) {
        let steps = target.wrapping_sub(self.now) as i32;
        if steps <= 0 {
            return;
        }
        if steps as usize >= BUCKETS {
            // A lap or more behind: every bucket comes due once, so one pass over all of them does.
            self.now = target;
            for bucket in &mut self.buckets {
                take_due(bucket, target, out);
            }
        } else {
            for _ in 0..steps {
                self.advance(out);
            }
        }
    }
}

/// Moves the entries of `bucket` due at or before tick `now` into `out`.
fn take_due(bucket: &mut Vec<TimerEntry>, now: u32, out: &mut Vec<TimerEntry>) {
    let mut i = 0;
    while i < bucket.len() {
        if bucket[i].due.wrapping_sub(now) as i32 <= 0 {
            out.push(bucket.swap_remove(i));
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fire_at_their_tick_even_beyond_one_lap() {
        let mut wheel = TimerWheel::new();
        wheel.schedule(1, 0, 3);
        wheel.schedule(2, 0, 3 + BUCKETS as u32);
        wheel.schedule(3, 0, 0); // in the past: next tick
        let mut fired = Vec::new();
        let mut at = Vec::new();
        for _ in 0..(BUCKETS as u32 + 5) {
            wheel.advance(&mut fired);
            for e in fired.drain(..) {
                at.push((e.key, wheel.now()));
            }
        }
        assert_eq!(at, vec![(3, 1), (1, 3), (2, 3 + BUCKETS as u32)]);
    }

    /// Fires every entry by `advance_to` and records the tick it fired at.
    fn fire_to(wheel: &mut TimerWheel, target: u32, at: &mut Vec<(u32, u32)>) {
        let mut fired = Vec::new();
        wheel.advance_to(target, &mut fired);
        at.extend(fired.iter().map(|e| (e.key, wheel.now())));
    }

    #[test]
    fn a_late_tick_catches_up_and_fires_everything_due_in_between_once() {
        let mut wheel = TimerWheel::new();
        for key in 1..=10 {
            wheel.schedule(key, 0, key * 10);
        }
        let mut at = Vec::new();
        fire_to(&mut wheel, 35, &mut at);
        at.sort();
        assert_eq!(at, vec![(1, 35), (2, 35), (3, 35)]);
        at.clear();
        // Going back, or staying, fires nothing and keeps the tick.
        fire_to(&mut wheel, 35, &mut at);
        fire_to(&mut wheel, 20, &mut at);
        assert!(at.is_empty());
        assert_eq!(wheel.now(), 35);
        // One step and then a long jump: each entry fires once.
        fire_to(&mut wheel, 40, &mut at);
        fire_to(&mut wheel, 100, &mut at);
        at.sort();
        let keys: Vec<u32> = at.iter().map(|&(k, _)| k).collect();
        assert_eq!(keys, (4..=10).collect::<Vec<_>>());
        assert_eq!(at[0], (4, 40));
        assert!(at[1..].iter().all(|&(_, t)| t == 100));
        fire_to(&mut wheel, 5000, &mut at);
        assert_eq!(at.len(), 7);
    }

    #[test]
    fn a_jump_of_several_laps_fires_what_is_due_and_keeps_what_is_not() {
        let laps = BUCKETS as u32;
        let mut wheel = TimerWheel::new();
        wheel.schedule(1, 0, 5);
        wheel.schedule(2, 0, 2 * laps + 7); // due inside the jump, in the same bucket lap after lap
        wheel.schedule(3, 0, 3 * laps); // due exactly at the target
        wheel.schedule(4, 0, 3 * laps + 1); // one tick after it
        wheel.schedule(5, 0, 5 * laps + 5); // two laps after it, same bucket as key 1
        let mut at = Vec::new();
        fire_to(&mut wheel, 3 * laps, &mut at);
        at.sort();
        assert_eq!(at, vec![(1, 3 * laps), (2, 3 * laps), (3, 3 * laps)]);
        at.clear();
        fire_to(&mut wheel, 3 * laps + 1, &mut at);
        assert_eq!(at, vec![(4, 3 * laps + 1)]);
        at.clear();
        fire_to(&mut wheel, 5 * laps + 4, &mut at);
        assert!(at.is_empty());
        fire_to(&mut wheel, 5 * laps + 5, &mut at);
        assert_eq!(at, vec![(5, 5 * laps + 5)]);
    }

    #[test]
    fn catching_up_across_the_counter_wrapping() {
        let mut wheel = TimerWheel::new();
        let mut at = Vec::new();
        let start = u32::MAX - 10;
        fire_to(&mut wheel, 1 << 30, &mut at);
        fire_to(&mut wheel, 1 << 31, &mut at);
        fire_to(&mut wheel, start, &mut at);
        assert_eq!(wheel.now(), start);
        wheel.schedule(1, 0, start.wrapping_add(5));
        wheel.schedule(2, 0, start.wrapping_add(20)); // 9 after the wrap
        wheel.schedule(3, 0, start.wrapping_add(2000)); // beyond a lap after the wrap
        fire_to(&mut wheel, start.wrapping_add(20), &mut at);
        at.sort();
        assert_eq!(at, vec![(1, 9), (2, 9)]);
        at.clear();
        fire_to(&mut wheel, start.wrapping_add(1999), &mut at);
        assert!(at.is_empty());
        fire_to(&mut wheel, start.wrapping_add(3000), &mut at);
        assert_eq!(at, vec![(3, start.wrapping_add(3000))]);
        // Scheduling in the past, across the wrap, still means the next tick.
        wheel.schedule(4, 0, start);
        fire_to(&mut wheel, start.wrapping_add(3001), &mut at);
        assert_eq!(at[1], (4, start.wrapping_add(3001)));
    }
}
