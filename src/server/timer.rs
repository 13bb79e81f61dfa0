//! A hashed timer wheel driven by the worker's periodic tick.
//!
//! The wheel has no clock of its own: the worker tells it which tick it is (`advance_to`, from the
//! monotonic clock on each tick completion), and a late tick catches up, firing every entry due in between
//! exactly once.
//!
//! Each key (a connection's slot in the worker's table) has at most one entry, its next check: scheduling
//! a key that has one moves it (earlier or later), [`TimerWheel::cancel`] removes it, and a key whose
//! entry fires has none until it is scheduled again. So no entry is ever stale: a connection released
//! cancels its entry, and its slot's next connection starts without one. The hot path never touches the
//! wheel: a connection records its last activity as a plain store, and only when its entry comes due does
//! the worker look at it and either act (timeout) or schedule the next deadline. This module knows nothing
//! of connections; it must never allocate per tick in steady state.
//!
//! Memory: one 12-byte node per key (its due tick and its links in its bucket's list; `u32` indices, the
//! node's index is its key), in one table, plus 8 KiB of list ends. A vector per bucket would instead
//! keep, in each of the 1,024 buckets, the capacity of the most entries that bucket ever held: under
//! connection churn that sum rises lap after lap with every new per-tick peak (and fragments the heap as
//! the vectors regrow), which is how an echo server's RSS grew for the whole of a churn soak.
//!
//! The worker makes its wheel with room for every slot of its connection table
//! ([`TimerWheel::with_capacity`]): the node table is then one reservation of address space, its pages
//! touched only as keys first use them, and it is never regrown (copied, the old copy left behind in the
//! heap) while the connections ramp up.

/// The end of a list, and the `prev` of a node in no list.
const NIL: u32 = u32::MAX;
/// The `prev` of a node that is in no list (its key has no entry).
const UNSCHEDULED: u32 = u32::MAX - 1;

/// The entry of one key: its due tick and its neighbours in its bucket's list (`prev` is [`NIL`] at the
/// head and [`UNSCHEDULED`] when the key has no entry).
#[derive(Debug, Clone, Copy)]
struct Node {
    due: u32,
    next: u32,
    prev: u32,
}

const NO_ENTRY: Node = Node {
    due: 0,
    next: NIL,
    prev: UNSCHEDULED,
};

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
    /// One node per key, indexed by key (grown to the largest key scheduled).
    nodes: Vec<Node>,
    /// Keys with an entry.
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

    /// A wheel whose node table has room for keys `0..keys` before it grows. Reserving is address space
    /// only: a page of the table is touched when a key in it is first scheduled.
    pub fn with_capacity(keys: usize) -> TimerWheel {
        TimerWheel {
            buckets: vec![EMPTY; BUCKETS].into_boxed_slice(),
            nodes: Vec::with_capacity(keys),
            len: 0,
            now: 0,
        }
    }

    /// The current tick.
    pub fn now(&self) -> u32 {
        self.now
    }

    /// Keys with an entry.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys the node table holds room for (what the wheel's memory is proportional to).
    pub fn capacity(&self) -> usize {
        self.nodes.capacity()
    }

    /// The tick `key`'s entry is due at, if it has one.
    pub fn due(&self, key: u32) -> Option<u32> {
        self.nodes
            .get(key as usize)
            .filter(|node| node.prev != UNSCHEDULED)
            .map(|node| node.due)
    }

    /// Schedules the check of `key` at tick `due` (at the earliest the next tick; ticks wrap around, so
    /// "earlier" means less than half the counter behind), in place of its entry if it has one.
    ///
    /// # Panics
    /// If `key` is `u32::MAX - 1` or above (the list ends).
    pub fn schedule(&mut self, key: u32, due: u32) {
        assert!(key < UNSCHEDULED, "timer wheel key {key} out of range");
        let next = self.now.wrapping_add(1);
        let due = if (due.wrapping_sub(next) as i32) < 0 {
            next
        } else {
            due
        };
        let index = key as usize;
        if index >= self.nodes.len() {
            self.nodes.resize(index + 1, NO_ENTRY);
        }
        if self.nodes[index].prev == UNSCHEDULED {
            self.len += 1;
        } else {
            self.unlink(key);
        }
        let bucket = &mut self.buckets[due as usize % BUCKETS];
        let tail = bucket.tail;
        if tail == NIL {
            bucket.head = key;
        } else {
            self.nodes[tail as usize].next = key;
        }
        bucket.tail = key;
        self.nodes[index] = Node {
            due,
            next: NIL,
            prev: tail,
        };
    }

    /// Removes `key`'s entry, if it has one.
    pub fn cancel(&mut self, key: u32) {
        if self.due(key).is_some() {
            self.unlink(key);
            self.nodes[key as usize] = NO_ENTRY;
            self.len -= 1;
        }
    }

    /// Takes scheduled `key`'s node out of its bucket's list (its own fields are left as they were).
    fn unlink(&mut self, key: u32) {
        let Node { due, next, prev } = self.nodes[key as usize];
        let bucket = due as usize % BUCKETS;
        if prev == NIL {
            self.buckets[bucket].head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.buckets[bucket].tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    /// Advances one tick and moves the keys now due into `out` (entries of the same bucket due in a later
    /// lap stay). A key moved out has no entry until it is scheduled again.
    pub fn advance(&mut self, out: &mut Vec<u32>) {
        self.now = self.now.wrapping_add(1);
        let now = self.now;
        self.take_due(now as usize % BUCKETS, now, out);
    }

    /// Advances to tick `target` and moves every key due up to it into `out`, each once. A target at or
    /// behind the current tick (in the wrapping sense: less than half the counter ahead) changes nothing:
    /// the wheel never goes back.
    pub fn advance_to(&mut self, target: u32, out: &mut Vec<u32>) {
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

    /// Moves the keys of `bucket` due at or before tick `now` into `out` and removes their entries.
    fn take_due(&mut self, bucket: usize, now: u32, out: &mut Vec<u32>) {
        let mut at = self.buckets[bucket].head;
        while at != NIL {
            let node = self.nodes[at as usize];
            if node.due.wrapping_sub(now) as i32 <= 0 {
                out.push(at);
                self.unlink(at);
                self.nodes[at as usize] = NO_ENTRY;
                self.len -= 1;
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
        wheel.schedule(1, 3);
        wheel.schedule(2, 3 + BUCKETS as u32);
        wheel.schedule(3, 0); // in the past: next tick
        let mut fired = Vec::new();
        let mut at = Vec::new();
        for _ in 0..(BUCKETS as u32 + 5) {
            wheel.advance(&mut fired);
            for e in fired.drain(..) {
                at.push((e, wheel.now()));
            }
        }
        assert_eq!(at, vec![(3, 1), (1, 3), (2, 3 + BUCKETS as u32)]);
    }

    /// Fires every entry by `advance_to` and records the tick it fired at.
    fn fire_to(wheel: &mut TimerWheel, target: u32, at: &mut Vec<(u32, u32)>) {
        let mut fired = Vec::new();
        wheel.advance_to(target, &mut fired);
        at.extend(fired.iter().map(|&key| (key, wheel.now())));
    }

    #[test]
    fn a_late_tick_catches_up_and_fires_everything_due_in_between_once() {
        let mut wheel = TimerWheel::new();
        for key in 1..=10 {
            wheel.schedule(key, key * 10);
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
        wheel.schedule(1, 5);
        wheel.schedule(2, 2 * laps + 7); // due inside the jump, in the same bucket lap after lap
        wheel.schedule(3, 3 * laps); // due exactly at the target
        wheel.schedule(4, 3 * laps + 1); // one tick after it
        wheel.schedule(5, 5 * laps + 5); // two laps after it, same bucket as key 1
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
        wheel.schedule(1, start.wrapping_add(5));
        wheel.schedule(2, start.wrapping_add(20)); // 9 after the wrap
        wheel.schedule(3, start.wrapping_add(2000)); // beyond a lap after the wrap
        fire_to(&mut wheel, start.wrapping_add(20), &mut at);
        at.sort();
        assert_eq!(at, vec![(1, 9), (2, 9)]);
        at.clear();
        fire_to(&mut wheel, start.wrapping_add(1999), &mut at);
        assert!(at.is_empty());
        fire_to(&mut wheel, start.wrapping_add(3000), &mut at);
        assert_eq!(at, vec![(3, start.wrapping_add(3000))]);
        // Scheduling in the past, across the wrap, still means the next tick.
        wheel.schedule(4, start);
        fire_to(&mut wheel, start.wrapping_add(3001), &mut at);
        assert_eq!(at[1], (4, start.wrapping_add(3001)));
    }
    #[test]
    fn a_bucket_fires_in_the_order_scheduled_and_keeps_later_laps_linked() {
        let laps = BUCKETS as u32;
        let mut wheel = TimerWheel::new();
        // One bucket: due now, a lap later, now, two laps later, now (the last one is the tail).
        for (key, due) in [(1, 7), (2, 7 + laps), (3, 7), (4, 7 + 2 * laps), (5, 7)] {
            wheel.schedule(key, due);
        }
        let mut at = Vec::new();
        fire_to(&mut wheel, 7, &mut at);
        assert_eq!(at, vec![(1, 7), (3, 7), (5, 7)]);
        assert_eq!(wheel.len(), 2);
        // Scheduled after the removals: appended behind what stayed.
        wheel.schedule(6, 7 + laps);
        at.clear();
        fire_to(&mut wheel, 7 + laps, &mut at);
        assert_eq!(at, vec![(2, 7 + laps), (6, 7 + laps)]);
        at.clear();
        fire_to(&mut wheel, 7 + 2 * laps, &mut at);
        assert_eq!(at, vec![(4, 7 + 2 * laps)]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn scheduling_again_moves_the_entry_earlier_or_later() {
        let mut wheel = TimerWheel::new();
        wheel.schedule(1, 50);
        wheel.schedule(2, 50);
        wheel.schedule(3, 50);
        assert_eq!(wheel.len(), 3);
        wheel.schedule(2, 10); // earlier, out of the middle of a list
        wheel.schedule(3, 90); // later, from its tail
        wheel.schedule(1, 2000); // beyond a lap, from its head
        assert_eq!(
            (wheel.len(), wheel.due(2), wheel.due(4)),
            (3, Some(10), None)
        );
        let mut at = Vec::new();
        fire_to(&mut wheel, 11, &mut at);
        assert_eq!(at, vec![(2, 11)]);
        assert_eq!(wheel.due(2), None, "a key that fired has no entry");
        fire_to(&mut wheel, 89, &mut at);
        assert_eq!(at.len(), 1, "nothing was left at its first tick");
        fire_to(&mut wheel, 90, &mut at);
        fire_to(&mut wheel, 1999, &mut at);
        fire_to(&mut wheel, 2000, &mut at);
        assert_eq!(at, vec![(2, 11), (3, 90), (1, 2000)]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_cancelled_entry_never_fires_and_its_bucket_stays_linked() {
        let mut wheel = TimerWheel::new();
        for key in 0..5 {
            wheel.schedule(key, 7);
        }
        wheel.cancel(0); // head
        wheel.cancel(2); // middle
        wheel.cancel(4); // tail
        wheel.cancel(4); // twice: nothing
        wheel.cancel(99); // never scheduled: nothing
        assert_eq!((wheel.len(), wheel.due(2)), (2, None));
        wheel.schedule(5, 7); // appended behind what stayed
        let mut at = Vec::new();
        fire_to(&mut wheel, 10, &mut at);
        assert_eq!(at, vec![(1, 10), (3, 10), (5, 10)]);
        assert!(wheel.is_empty());
    }

    /// The documented size (docs/ARCHITECTURE.md, "Memory per idle connection"): a key's node is 12
    /// bytes (it was 16 with the connection's generation in it, and stale entries took more nodes).
    #[test]
    fn a_node_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 12);
    }

    #[test]
    fn memory_is_one_node_per_key_however_often_keys_are_rescheduled() {
        let mut wheel = TimerWheel::with_capacity(10_000);
        let (capacity, table) = (wheel.capacity(), wheel.nodes.as_ptr());
        assert!(capacity >= 10_000);
        let mut fired = Vec::new();
        // Every key scheduled, then rescheduled every tick for more than a lap, and some fired: the
        // table is the one reserved, never regrown.
        for key in 0..10_000 {
            wheel.schedule(key, key % 3000);
        }
        for _ in 0..(BUCKETS + 10) {
            let now = wheel.now();
            for key in (0..10_000).step_by(7) {
                wheel.schedule(key, now + 5);
            }
            wheel.advance(&mut fired);
        }
        assert!(wheel.len() <= 10_000 && !fired.is_empty());
        assert_eq!((wheel.capacity(), wheel.nodes.as_ptr()), (capacity, table));
        assert_eq!(wheel.nodes.len(), 10_000);
        // A key beyond the reservation still gets its entry (the table grows).
        wheel.schedule(capacity as u32, 5);
        assert!(wheel.capacity() > capacity);
    }
}
