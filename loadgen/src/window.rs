//! The closed loop of `broadcast --window N`: at most N published messages in flight over all publishers
//! together, a message being in flight from the moment a publisher queues it until every subscriber has
//! received it. Publishers publish whenever the window has room, with no schedule; this module only
//! keeps the count and never sends anything itself.
//!
//! Accounting: two totals shared by the worker threads of the process, `published` (messages) and
//! `delivered` (first deliveries, over all subscribers). The deliveries still owed are
//! `published x subscribers - delivered`, and a publisher may take a place for one more message only if,
//! counting it, they stay within `N x subscribers`. The messages in flight are the owed deliveries in
//! whole messages, rounded up (`ceil(owed / subscribers)`).
//!
//! How this differs from tracking each message: when every subscriber is at the same point (each has
//! received the same messages) the two are the same count. When subscribers are at different points the
//! aggregate counts fewer: a message that only one subscriber still lacks weighs `1 / subscribers` here
//! but a whole place in per-message tracking. So a slow subscriber does not hold the window alone: with
//! the others caught up it may fall up to `N x subscribers` messages behind before publishing stops,
//! where per-message tracking would stop at N. (A subscriber that never receives some messages, lost by
//! the server or missed while it was disconnected, keeps their share of the window taken for the rest of
//! the run: fewer publishes, and the report shows them missing.)
//!
//! Hot path: a place is one `fetch_add` and one load (plus a `fetch_sub` when the window is full);
//! subscribers add their deliveries once per received batch. No lock, no allocation. The counts are per
//! process: `--window` refuses `--procs` above 1.

use std::sync::atomic::{AtomicU64, Ordering};

/// The window of one process, shared by its worker threads.
#[derive(Debug)]
pub struct Window {
    /// N: most messages in flight.
    limit: u64,
    subscribers: u64,
    /// Messages published, plus places being taken (a failed take gives its place back at once).
    published: AtomicU64,
    /// First deliveries over all subscribers.
    delivered: AtomicU64,
    /// The most messages in flight after any successful take.
    max_in_flight: AtomicU64,
}

/// Deliveries still owed for `published` messages to `subscribers` subscribers of which `delivered`
/// arrived.
fn owed(published: u64, delivered: u64, subscribers: u64) -> u64 {
    published
        .saturating_mul(subscribers)
        .saturating_sub(delivered)
}

/// Messages in flight for `owed` deliveries owed: whole messages, rounded up.
fn in_flight_messages(owed: u64, subscribers: u64) -> u64 {
    owed.div_ceil(subscribers.max(1))
}

impl Window {
    /// A window of `limit` messages (at least 1) over `subscribers` subscribers.
    pub fn new(limit: u64, subscribers: u64) -> Window {
        Window {
            limit: limit.max(1),
            subscribers: subscribers.max(1),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
        }
    }

    /// Takes a place for one more message: the messages in flight counting it, or `None` when that
    /// would be more than N (the place is given back).
    ///
    /// Why several threads never overshoot: each take adds its message before it looks at the
    /// deliveries, so the total it checks includes every place taken before it; a place given back only
    /// makes later checks stricter than needed. The latest successful take saw at most N in flight, and
    /// after it deliveries only lower the count.
    pub fn take(&self) -> Option<u64> {
        let published = self.published.fetch_add(1, Ordering::AcqRel) + 1;
        let delivered = self.delivered.load(Ordering::Acquire);
        let owed = owed(published, delivered, self.subscribers);
        if owed > self.limit * self.subscribers {
            self.published.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(in_flight_messages(owed, self.subscribers))
    }

    /// Counts `deliveries` more first deliveries (a subscriber's received batch).
    pub fn delivered(&self, deliveries: u64) {
        if deliveries > 0 {
            self.delivered.fetch_add(deliveries, Ordering::AcqRel);
        }
    }

    /// Records `in_flight` messages seen in flight (callers pass only a new maximum of their own, so
    /// this is rare).
    pub fn record_in_flight(&self, in_flight: u64) {
        self.max_in_flight.fetch_max(in_flight, Ordering::Relaxed);
    }

    /// The most messages seen in flight after a take.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_owed_deliveries_in_whole_messages() {
        assert_eq!(owed(10, 25, 3), 5);
        assert_eq!(in_flight_messages(5, 3), 2);
        assert_eq!(in_flight_messages(6, 3), 2);
        assert_eq!(in_flight_messages(0, 3), 0);
        // More delivered than published never wraps (a place being taken and given back).
        assert_eq!(owed(1, 5, 3), 0);
    }

    #[test]
    fn a_full_window_takes_no_more_until_every_subscriber_received() {
        let window = Window::new(4, 3);
        for expected in 1..=4 {
            assert_eq!(window.take(), Some(expected));
        }
        assert_eq!(window.take(), None);
        // Two of three subscribers received the first message: still 4 in flight.
        window.delivered(2);
        assert_eq!(window.take(), None);
        // The third one: a place.
        window.delivered(1);
        assert_eq!(window.take(), Some(4));
        assert_eq!(window.take(), None);
        // The failed takes gave their places back.
        assert_eq!(window.published.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_slow_subscriber_holds_only_its_share() {
        // One subscriber of 4 lags: the others received all 2 messages, it none.
        let window = Window::new(2, 4);
        assert_eq!(window.take(), Some(1));
        assert_eq!(window.take(), Some(2));
        window.delivered(6);
        // 2 deliveries owed = half a message: room for one more (per-message tracking would say full).
        assert_eq!(window.take(), Some(2));
        assert_eq!(window.take(), None);
    }

    #[test]
    fn threads_never_overshoot_the_window() {
        use std::sync::Arc;
        let window = Arc::new(Window::new(8, 2));
        // Messages taken and not yet delivered, counted apart from the window.
        let outstanding = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (window, outstanding) = (window.clone(), outstanding.clone());
                std::thread::spawn(move || {
                    let (mut taken, mut held) = (0, 0);
                    while taken < 2_000 {
                        // Hold up to 3 messages, then both subscribers receive them.
                        let place = if held < 3 { window.take() } else { None };
                        if let Some(in_flight) = place {
                            window.record_in_flight(in_flight);
                            let now = outstanding.fetch_add(1, Ordering::AcqRel) + 1;
                            assert!(now <= 8, "{now} in flight");
                            taken += 1;
                            held += 1;
                        } else {
                            for _ in 0..held {
                                outstanding.fetch_sub(1, Ordering::AcqRel);
                                window.delivered(2);
                            }
                            held = 0;
                        }
                    }
                    for _ in 0..held {
                        outstanding.fetch_sub(1, Ordering::AcqRel);
                        window.delivered(2);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(window.published.load(Ordering::Relaxed), 8_000);
        assert!((1..=8).contains(&window.max_in_flight()));
    }
}
