//! The timer wheel's heap under connection churn follows the entries pending at once, and steady churn
//! leaves it where warm-up left it.
//!
//! Each churned connection leaves two entries in its worker's wheel (its handshake deadline, 10 s ahead,
//! and its close deadline, 5 s ahead) that stay until due, long after the connection is gone. This drives
//! the wheel the way an echo server does under a ramp of connections and then `ringws-loadgen churn` at
//! 500 cycles/s (about 50 cycles per 100 ms tick, varying from tick to tick), and measures the live heap
//! with dhat: it must stay within 2 x 16 bytes per entry at the most entries ever pending (a vector's
//! growth) plus the fixed bucket ends, and many laps of the same load must not move it.

use ringws::server::timer::{TimerEntry, TimerWheel};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Ticks per lap of the wheel (its bucket count).
const LAP: u32 = 1024;
/// The handshake and close deadlines of the server's defaults, in 100 ms ticks.
const HANDSHAKE: u32 = 100;
const CLOSE: u32 = 50;

/// A small deterministic generator (xorshift32), so the load is the same on every run.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// The wheel and what the test knows of it: entries scheduled and fired, the most pending at once.
struct Churn {
    wheel: TimerWheel,
    out: Vec<TimerEntry>,
    rng: Rng,
    key: u32,
    scheduled: u64,
    fired: u64,
    peak_pending: u64,
}

impl Churn {
    /// One tick: `cycles` connections come and go, each scheduling its handshake and close deadlines;
    /// every due entry is drained as the worker does.
    fn tick(&mut self, cycles: u32) {
        let now = self.wheel.now();
        for _ in 0..cycles {
            self.key = self.key.wrapping_add(1);
            self.wheel
                .schedule(self.key, 0, now.wrapping_add(HANDSHAKE));
            self.wheel.schedule(self.key, 1, now.wrapping_add(CLOSE));
            self.scheduled += 2;
        }
        self.peak_pending = self.peak_pending.max(self.scheduled - self.fired);
        self.wheel.advance(&mut self.out);
        self.fired += self.out.len() as u64;
        self.out.clear();
    }

    /// `laps` laps of steady churn: 30 to 70 cycles a tick.
    fn laps(&mut self, laps: u32) {
        for _ in 0..laps * LAP {
            let cycles = 30 + self.rng.next() % 41;
            self.tick(cycles);
        }
    }

    /// The most heap the wheel may hold: 16 bytes a node, twice the peak for the vector's growth, 8 bytes
    /// of bucket ends per bucket, and the drain vector.
    fn bound(&self) -> u64 {
        2 * 16 * self.peak_pending
            + 8 * LAP as u64
            + (self.out.capacity() * size_of::<TimerEntry>()) as u64
    }
}

#[test]
fn churn_leaves_the_wheels_heap_where_warm_up_left_it() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut churn = Churn {
        wheel: TimerWheel::new(),
        out: Vec::with_capacity(1024),
        rng: Rng(0x9e37_79b9),
        key: 0,
        scheduled: 0,
        fired: 0,
        peak_pending: 0,
    };
    // Warm-up: a ramp of 2,000 connections in one tick, then two laps of churn: every bucket used.
    churn.tick(2000);
    churn.laps(2);
    let warm = dhat::HeapStats::get();
    assert!(
        warm.curr_bytes as u64 <= churn.bound(),
        "after warm-up the wheel holds {} bytes, over {} for {} entries pending at most",
        warm.curr_bytes,
        churn.bound(),
        churn.peak_pending
    );
    churn.laps(30);
    let end = dhat::HeapStats::get();
    // The load really ran: some 50 cycles a tick, two entries each, all fired but the last 100 ticks'.
    assert!(
        churn.fired > 32 * LAP as u64 * 2 * 45,
        "fired {}",
        churn.fired
    );
    assert!(
        end.curr_bytes as u64 <= churn.bound(),
        "after 32 laps the wheel holds {} bytes, over {} for {} entries pending at most",
        end.curr_bytes,
        churn.bound(),
        churn.peak_pending
    );
    assert!(
        end.curr_bytes <= warm.curr_bytes,
        "the wheel's heap grew under steady churn: {} bytes after warm-up, {} after 30 more laps",
        warm.curr_bytes,
        end.curr_bytes
    );
}
