//! The timer wheel's heap under connection churn follows the connections held at once (one node per
//! slot of the connection table), and steady churn leaves it where warm-up left it.
//!
//! Each churned connection takes a slot of the worker's table (the slab reuses freed slots first), schedules
//! its handshake deadline (10 s ahead), moves it to its close deadline (5 s ahead) when it closes, and
//! cancels it when it is released. This drives the wheel the way an echo server does under a ramp of
//! connections and then `ringws-loadgen churn` at 500 cycles/s (about 50 cycles per 100 ms tick, varying
//! from tick to tick, each connection living a few ticks), and measures the live heap with dhat: it must
//! stay within 2 x 12 bytes per slot at the most slots ever held (a vector's growth) plus the fixed bucket
//! ends, and many laps of the same load must not move it.

use std::collections::VecDeque;

use ringws::server::timer::TimerWheel;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Ticks per lap of the wheel (its bucket count).
const LAP: u32 = 1024;
/// The handshake and close deadlines of the server's defaults, in 100 ms ticks.
const HANDSHAKE: u32 = 100;
const CLOSE: u32 = 50;
/// Ticks a churned connection lives (open, then closing) before it is released.
const LIFE: usize = 3;

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

/// The wheel and what the test knows of it: slots in use, released (reused first), the most held at once.
struct Churn {
    wheel: TimerWheel,
    out: Vec<u32>,
    rng: Rng,
    /// Slots taken by each of the last `LIFE` ticks, oldest first.
    live: VecDeque<Vec<u32>>,
    free: Vec<u32>,
    next_slot: u32,
    scheduled: u64,
    fired: u64,
}

impl Churn {
    /// One tick: `cycles` connections open and schedule their handshake deadline, those opened a tick ago
    /// close (their entry moves to the close deadline), those opened `LIFE` ticks ago are released (their
    /// entry cancelled, their slot freed); every due entry is drained as the worker does.
    fn tick(&mut self, cycles: u32) {
        let now = self.wheel.now();
        if self.live.len() == LIFE {
            for slot in self.live.pop_front().unwrap() {
                self.wheel.cancel(slot);
                self.free.push(slot);
            }
        }
        if let Some(closing) = self.live.back() {
            for &slot in closing {
                self.wheel.schedule(slot, now.wrapping_add(CLOSE));
                self.scheduled += 1;
            }
        }
        let mut opened = Vec::with_capacity(cycles as usize);
        for _ in 0..cycles {
            let slot = self.free.pop().unwrap_or_else(|| {
                self.next_slot += 1;
                self.next_slot - 1
            });
            self.wheel.schedule(slot, now.wrapping_add(HANDSHAKE));
            self.scheduled += 1;
            opened.push(slot);
        }
        self.live.push_back(opened);
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

    /// The most heap the wheel may hold: 12 bytes a node for every slot ever used, twice that for the
    /// vector's growth, 8 bytes of bucket ends per bucket, and the drain vector.
    fn bound(&self) -> u64 {
        2 * 12 * self.next_slot as u64
            + 8 * LAP as u64
            + (self.out.capacity() * size_of::<u32>()) as u64
    }
}

/// The test's own bookkeeping (slot lists) is on the same heap: measured apart and left out.
fn wheel_bytes(churn: &Churn) -> u64 {
    let own = churn.live.capacity() * size_of::<Vec<u32>>()
        + churn.live.iter().map(|v| v.capacity() * 4).sum::<usize>()
        + churn.free.capacity() * 4;
    dhat::HeapStats::get().curr_bytes as u64 - own as u64
}

#[test]
fn churn_leaves_the_wheels_heap_where_warm_up_left_it() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut churn = Churn {
        wheel: TimerWheel::new(),
        out: Vec::with_capacity(1024),
        rng: Rng(0x9e37_79b9),
        live: VecDeque::with_capacity(LIFE + 1),
        free: Vec::with_capacity(4096),
        next_slot: 0,
        scheduled: 0,
        fired: 0,
    };
    // Warm-up: a ramp of 2,000 connections in one tick, then two laps of churn: every bucket used.
    churn.tick(2000);
    churn.laps(2);
    let warm = wheel_bytes(&churn);
    assert!(
        warm <= churn.bound(),
        "after warm-up the wheel holds {warm} bytes, over {} for {} slots",
        churn.bound(),
        churn.next_slot
    );
    let slots_after_warm_up = churn.next_slot;
    churn.laps(30);
    let end = wheel_bytes(&churn);
    // The load really ran: some 50 cycles a tick, two entries each; released connections' entries never
    // fire (the close deadline is 50 ticks, a connection lives 3).
    assert!(
        churn.scheduled > 32 * LAP as u64 * 2 * 45,
        "scheduled {}",
        churn.scheduled
    );
    assert_eq!(churn.fired, 0, "an entry of a released connection fired");
    assert_eq!(
        churn.wheel.len(),
        churn.live.iter().map(Vec::len).sum::<usize>()
    );
    assert_eq!(churn.next_slot, slots_after_warm_up, "slots are reused");
    assert!(
        end <= churn.bound(),
        "after 32 laps the wheel holds {end} bytes, over {} for {} slots",
        churn.bound(),
        churn.next_slot
    );
    assert!(
        end <= warm,
        "the wheel's heap grew under steady churn: {warm} bytes after warm-up, {end} after 30 more laps"
    );
}
