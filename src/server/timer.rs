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
//! connections; it must never allocate per tick in steady state.
//!
//! Memory: every entry lives in one node table shared by all buckets (each bucket is a list threaded
//! through it, freed nodes are reused first), so the wheel holds 16 bytes per entry at the most entries
//! ever pending at once, plus 8 KiB of list ends. A vector per bucket would instead keep, in each of the
//! 1,024 buckets, the capacity of the most entries that bucket ever held: under connection churn that sum
//! rises lap after lap with every new per-tick peak (and fragments the heap as the vectors regrow), which
//! is how an echo server's RSS grew for the whole of a churn soak.
//!
//! The worker makes its wheel with room for one entry per slot of its connection table
//! ([`TimerWheel::with_capacity`]): the node table is then one reservation of address space, its pages
//! touched only as entries first use them, and it is not regrown (copied, the old copy left behind in the
//! heap) while the connections ramp up. Only more entries than that pending at once (stale entries of
//! rescheduled connections) grow it past the reservation.

/// One scheduled check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerEntry {
    pub key: u32,
    pub generation: u32,
    pub due: u32,
}

/// The end of a list (bucket or free list).
const NIL: u32 = u32::MAX;

/// An entry in the node table, linked to the next entry of its bucket (or of the free list).
#[derive(Debug, Clone, Copy)]
struct Node {
    entry: TimerEntry,
    next: u32,
}

/// The first and last node of one bucket (`NIL` when empty); entries of a bucket fire in the order they
/// were scheduled.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

pub struct TimerWheel {
    buckets: Box<[List]>,
    nodes: Vec<Node>,
    /// The first free node (a list through `Node::next`).
    free: u32,
    /// Entries scheduled and not yet fired.
    len: usize,
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
        TimerWheel::with_capacity(0)
    }

    /// A wheel whose node table has room for `entries` pending entries before it grows. Reserving is
    /// address space only: a page of the table is touched when an entry first lands in it.
    pub fn with_capacity(entries: usize) -> TimerWheel {
        TimerWheel {
            buckets: vec![EMPTY; BUCKETS].into_boxed_slice(),
            nodes: Vec::with_capacity(entries),
            free: NIL,
            len: 0,
            now: 0,
        }
    }

    /// The current tick.
    pub fn now(&self) -> u32 {
        self.now
    }

    /// Entries scheduled and not yet fired (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Nodes the table holds room for: the most entries ever pending at once, rounded up by the vector's
    /// growth (what the wheel's memory is proportional to).
    pub fn capacity(&self) -> usize {
        self.nodes.capacity()
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
        let node = Node {
            entry: TimerEntry {
                key,
                generation,
                due,
            },
            next: NIL,
        };
        let index = if self.free != NIL {
            let index = self.free;
            self.free = self.nodes[index as usize].next;
            self.nodes[index as usize] = node;
            index
        } else {
            assert!(self.nodes.len() < NIL as usize, "timer wheel full");
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        };
        let bucket = &mut self.buckets[due as usize % BUCKETS];
        if bucket.tail == NIL {
            bucket.head = index;
        } else {
            self.nodes[bucket.tail as usize].next = index;
        }
        bucket.tail = index;
        self.len += 1;
    }

    /// Advances one tick and moves the entries now due into `out` (entries of the same bucket due in a
    /// later lap stay).
    pub fn advance(&mut self, out: &mut Vec<TimerEntry>) {
        self.now = self.now.wrapping_add(1);
        let now = self.now;
        self.take_due(now as usize % BUCKETS, now, out);
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
            for bucket in 0..BUCKETS {
                self.take_due(bucket, target, out);
            }
        } else {
            for _ in 0..steps {
                self.advance(out);
            }
        }
    }

    /// Moves the entries of `bucket` due at or before tick `now` into `out`, their nodes to the free list.
    fn take_due(&mut self, bucket: usize, now: u32, out: &mut Vec<TimerEntry>) {
        let mut prev = NIL;
        let mut at = self.buckets[bucket].head;
        while at != NIL {
            let node = self.nodes[at as usize];
            if node.entry.due.wrapping_sub(now) as i32 <= 0 {
                out.push(node.entry);
                if prev == NIL {
                    self.buckets[bucket].head = node.next;
                } else {
                    self.nodes[prev as usize].next = node.next;
                }
                if self.buckets[bucket].tail == at {
                    self.buckets[bucket].tail = prev;
                }
                self.nodes[at as usize].next = self.free;
                self.free = at;
                self.len -= 1;
            } else {
                prev = at;
            }
            at = node.next;
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
    #[test]
    fn a_bucket_fires_in_the_order_scheduled_and_keeps_later_laps_linked() {
        let laps = BUCKETS as u32;
        let mut wheel = TimerWheel::new();
        // One bucket: due now, a lap later, now, two laps later, now (the last one is the tail).
        for (key, due) in [(1, 7), (2, 7 + laps), (3, 7), (4, 7 + 2 * laps), (5, 7)] {
            wheel.schedule(key, 0, due);
        }
        let mut at = Vec::new();
        fire_to(&mut wheel, 7, &mut at);
        assert_eq!(at, vec![(1, 7), (3, 7), (5, 7)]);
        assert_eq!(wheel.len(), 2);
        // Scheduled after the removals: appended behind what stayed.
        wheel.schedule(6, 0, 7 + laps);
        at.clear();
        fire_to(&mut wheel, 7 + laps, &mut at);
        assert_eq!(at, vec![(2, 7 + laps), (6, 7 + laps)]);
        at.clear();
        fire_to(&mut wheel, 7 + 2 * laps, &mut at);
        assert_eq!(at, vec![(4, 7 + 2 * laps)]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn memory_follows_the_entries_pending_at_once_not_each_buckets_record() {
        let mut wheel = TimerWheel::new();
        let mut fired = Vec::new();
        // A burst of 5,000 entries in one bucket, fired.
        for key in 0..5000 {
            wheel.schedule(key, 0, 3);
        }
        wheel.advance_to(3, &mut fired);
        assert_eq!(fired.len(), 5000);
        assert!(wheel.is_empty());
        let after_burst = wheel.capacity();
        // Then 5,000 entries a tick come and go in every other bucket, for a lap: their nodes are
        // those the burst left free, so the table does not grow.
        for _ in 0..BUCKETS {
            let now = wheel.now();
            for key in 0..4999 {
                wheel.schedule(key, 0, now + 1);
            }
            fired.clear();
            wheel.advance(&mut fired);
            assert_eq!(fired.len(), 4999);
        }
        assert_eq!(wheel.capacity(), after_burst);
    }

    #[test]
    fn a_reserved_node_table_is_not_regrown_while_the_entries_fit() {
        let mut wheel = TimerWheel::with_capacity(10_000);
        let (capacity, table) = (wheel.capacity(), wheel.nodes.as_ptr());
        assert!(capacity >= 10_000);
        // As many entries as reserved, spread over many ticks: same table, nothing copied.
        for key in 0..10_000 {
            wheel.schedule(key, 0, key % 3000);
        }
        assert_eq!(wheel.len(), 10_000);
        assert_eq!(wheel.capacity(), capacity);
        assert_eq!(wheel.nodes.as_ptr(), table);
        // Beyond the reservation it still takes every entry (it grows).
        for key in 0..(capacity - 10_000 + 1) as u32 {
            wheel.schedule(key, 1, 5);
        }
        assert!(wheel.capacity() > capacity);
        let mut fired = Vec::new();
        wheel.advance_to(3000, &mut fired);
        assert_eq!(fired.len(), capacity + 1);
    }
}
