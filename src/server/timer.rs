//! A hashed timer wheel driven by the worker's periodic tick.
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

    /// Schedules a check of `key` at tick `due` (at the earliest the next tick).
    pub fn schedule(&mut self, key: u32, generation: u32, due: u32) {
        let due = due.max(self.now.wrapping_add(1));
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
        let bucket = &mut self.buckets[now as usize % BUCKETS];
        let mut i = 0;
        while i < bucket.len() {
            if bucket[i].due.wrapping_sub(now) as i32 <= 0 {
                out.push(bucket.swap_remove(i));
            } else {
                i += 1;
            }
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
}
