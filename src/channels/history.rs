//! The node's history of publications per topic: offsets, epochs, and bounded logs to recover from.
//!
//! Every publication on a topic gets the next offset of that topic (1, 2, 3, ...) within the topic's
//! epoch, and is kept in the topic's log, so that a client that was away can ask for exactly what it
//! missed. A topic's log is bounded three ways: at most `size` entries, each at most `ttl` old, and all
//! topics together at most `max_bytes` (the oldest entry of the node goes first). An epoch is a random name
//! given to a topic's log when it is created; a log is dropped when it holds nothing and nobody subscribes
//! to its topic on this node (so the node's memory is bounded by its entries and its subscriptions), and a
//! topic made again later gets a new epoch: offsets never repeat within an epoch, so a position (offset,
//! epoch) names one publication or none.
//!
//! One lock for the node: a publish takes it to assign the offset, store the entry and hand the message to
//! the workers *while holding it* ([`History::append`]), so every worker's inbox holds a topic's
//! publications in offset order. A worker takes it again only to catch up (a publication arrived before
//! one of its predecessors: a handoff was dropped), to recover a subscriber, or to answer a history query; never per delivery.
//!
//! Generic over the stored message (the server stores its shared frames): no I/O, no clock (the caller
//! passes `now`), no server types. Must never hold more than its bounds, and never answer a recovery with
//! part of a gap.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What every topic's log may hold (`--history-size`, `--history-ttl`, `--history-max-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Publications kept per topic (at least 1).
    pub size: usize,
    /// How long a publication is kept.
    pub ttl: Duration,
    /// Bytes all logs of the node may hold together (payload frames plus [`ENTRY_OVERHEAD`] per entry).
    pub max_bytes: usize,
}

/// Bytes counted per stored entry on top of its message: the entry in its topic's log.
pub const ENTRY_OVERHEAD: usize = 32;

/// Bytes counted per record in the node's expiry order, from the append until the record is reached (by
/// its time or the byte budget): a record outlives its entry when the per-topic size drops the entry first,
/// and this keeps those records bounded by the byte budget too.
pub const RECORD_OVERHEAD: usize = 32;

/// A topic log's epoch: 8 lowercase hex digits, random per log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch([u8; 8]);

impl Epoch {
    pub fn as_str(&self) -> &str {
        // Only ever made of ASCII hex digits (`Epoch::from_bits`, `Epoch::parse`).
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    fn from_bits(bits: u32) -> Epoch {
        let mut text = [0u8; 8];
        for (i, byte) in text.iter_mut().enumerate() {
            let nibble = (bits >> (28 - 4 * i)) & 0xf;
            *byte = b"0123456789abcdef"[nibble as usize];
        }
        Epoch(text)
    }

    /// An epoch as a client sends it back; `None` if it cannot be one.
    pub fn parse(text: &str) -> Option<Epoch> {
        let bytes: [u8; 8] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(Epoch(bytes))
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A place in a topic's stream: the offset of the last publication (0 before the first) in an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Epoch,
}

/// A stored message and what it costs.
pub trait Stored: Clone {
    /// Bytes the message holds (counted against `max_bytes`).
    fn stored_bytes(&self) -> usize;
}

/// The answer to a recovery ([`History::recover`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Recovery<M> {
    /// Every publication after the client's position, in order (possibly none).
    Recovered(Vec<(u64, M)>),
    /// The gap is not whole any more (entries gone, another epoch, a position this log never had): the
    /// client must fetch its state another way.
    NotRecovered,
}

/// Node-wide figures for `/metrics`.
#[derive(Debug, Default)]
pub struct HistoryStats {
    pub topics: AtomicU64,
    pub entries: AtomicU64,
    pub bytes: AtomicU64,
    pub appended: AtomicU64,
    /// Entries dropped by the per-topic size, the TTL and the node's byte budget.
    pub evicted_size: AtomicU64,
    pub evicted_ttl: AtomicU64,
    pub evicted_bytes: AtomicU64,
}

struct Entry<M> {
    offset: u64,
    message: M,
    /// Its message's bytes plus [`ENTRY_OVERHEAD`], counted while it is kept.
    cost: usize,
}

struct TopicLog<M> {
    epoch: Epoch,
    /// The last offset given (0: none yet).
    top: u64,
    entries: VecDeque<Entry<M>>,
    /// Workers of this node with a subscriber of the topic ([`History::pin`]).
    pins: u32,
    /// The epoch and offsets are the stream's: always on one node; in a mirror, once the first
    /// publication from the broker arrived (before, a pinned log holds a placeholder).
    synced: bool,
}

struct Logs<M> {
    topics: HashMap<Arc<str>, TopicLog<M>>,
    /// Every stored entry, oldest first: (topic, offset, expiry). An entry already gone from its log (the
    /// per-topic size, a mirror starting over) is skipped when reached; its record counts
    /// [`RECORD_OVERHEAD`] until then.
    order: VecDeque<(Arc<str>, u64, Instant)>,
    bytes: usize,
    /// Entries in the logs.
    count: usize,
    rng: u64,
}

/// What became of a publication offered to a mirror ([`History::insert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The next one: stored and handed on.
    Next,
    /// It follows a gap of this many (published while this node did not listen): stored and handed on;
    /// the log starts over at it.
    AfterGap(u64),
    /// Another epoch (the stream started over): stored and handed on; the log starts over at it.
    NewEpoch,
    /// At or before the log's newest: already had, dropped.
    Old,
}

/// The node's logs, behind one lock.
pub struct History<M> {
    config: HistoryConfig,
    /// The offsets come from elsewhere (the broker's stream, [`History::insert`]); this is a cache of it.
    mirror: bool,
    logs: Mutex<Logs<M>>,
    pub stats: HistoryStats,
}

impl<M: Stored> History<M> {
    /// An empty history; `seed` makes the epochs (any value that differs between runs of the node).
    pub fn new(config: HistoryConfig, seed: u64) -> History<M> {
        History {
            config: HistoryConfig {
                size: config.size.max(1),
                ..config
            },
            mirror: false,
            logs: Mutex::new(Logs {
                topics: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                count: 0,
                rng: seed | 1,
            }),
            stats: HistoryStats::default(),
        }
    }

    /// A cache of a history kept elsewhere (across nodes: offsets and epochs assigned in Redis):
    /// publications come in with their positions ([`History::insert`]), never by [`History::append`].
    pub fn mirror(config: HistoryConfig, seed: u64) -> History<M> {
        History {
            mirror: true,
            ..History::new(config, seed)
        }
    }

    /// Whether this is a mirror ([`History::mirror`]).
    pub fn is_mirror(&self) -> bool {
        self.mirror
    }

    /// Stores a publication that got `position` elsewhere (a mirror), and calls `deliver` with it while
    /// holding the lock (as [`History::append`] does). The log follows the stream: another epoch or a gap
    /// starts it over at this publication (what it held before cannot be part of a recovery across the
    /// change); one at or before the newest is dropped.
    pub fn insert(
        &self,
        topic: &Arc<str>,
        position: Position,
        message: M,
        now: Instant,
        deliver: impl FnOnce(&M),
    ) -> Inserted {
        let mut logs = self.lock();
        self.expire(&mut logs, now);
        let logs = &mut *logs;
        let log = Self::log(logs, &self.stats, topic);
        // Entries a reset drops: (how many, their bytes).
        let mut cleared = (0, 0);
        let inserted = if !log.synced || log.epoch != position.epoch {
            let fresh = !log.synced;
            log.epoch = position.epoch;
            log.synced = true;
            log.top = position.offset - 1;
            cleared = Self::clear(log);
            if fresh {
                Inserted::Next
            } else {
                Inserted::NewEpoch
            }
        } else if position.offset <= log.top {
            return Inserted::Old;
        } else if position.offset > log.top + 1 {
            let lost = position.offset - 1 - log.top;
            log.top = position.offset - 1;
            cleared = Self::clear(log);
            Inserted::AfterGap(lost)
        } else {
            Inserted::Next
        };
        log.top = position.offset;
        logs.count -= cleared.0;
        logs.bytes -= cleared.1;
        self.store(logs, topic, position.offset, message, now, deliver);
        inserted
    }

    /// Empties a log: how many entries it held and their bytes (their records stay, skipped when reached).
    fn clear(log: &mut TopicLog<M>) -> (usize, usize) {
        let bytes = log.entries.iter().map(|e| e.cost).sum();
        let count = log.entries.len();
        log.entries.clear();
        (count, bytes)
    }

    /// Puts `message` at `offset` at the end of `topic`'s log (which exists), calls `deliver` with it,
    /// and applies the bounds: the topic's size, the node's bytes.
    fn store(
        &self,
        logs: &mut Logs<M>,
        topic: &Arc<str>,
        offset: u64,
        message: M,
        now: Instant,
        deliver: impl FnOnce(&M),
    ) {
        let cost = message.stored_bytes() + ENTRY_OVERHEAD;
        let expires = now + self.config.ttl;
        let log = logs.topics.get_mut(&**topic).expect("made by the caller");
        log.entries.push_back(Entry {
            offset,
            message,
            cost,
        });
        deliver(&log.entries.back().expect("just pushed").message);
        let dropped = (log.entries.len() > self.config.size)
            .then(|| log.entries.pop_front())
            .flatten();
        logs.bytes += cost + RECORD_OVERHEAD;
        logs.count += 1;
        if let Some(dropped) = dropped {
            logs.bytes -= dropped.cost;
            logs.count -= 1;
            self.stats.evicted_size.fetch_add(1, Ordering::Relaxed);
        }
        logs.order.push_back((Arc::clone(topic), offset, expires));
        self.stats.appended.fetch_add(1, Ordering::Relaxed);
        while logs.bytes > self.config.max_bytes {
            match Self::drop_oldest(logs, &self.stats) {
                None => break,
                Some(true) => {
                    self.stats.evicted_bytes.fetch_add(1, Ordering::Relaxed);
                }
                Some(false) => {}
            }
        }
        self.publish_stats(logs);
    }

    pub fn config(&self) -> HistoryConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, Logs<M>> {
        // A panic while holding the lock leaves consistent logs (every step keeps them whole): go on.
        self.logs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives `message` the next offset of `topic`, stores it (evicting what the bounds require), and
    /// calls `deliver` with the message and its position while still holding the node's lock, so that
    /// what `deliver` queues is in offset order. `message` is given the position by `place` first (the
    /// stored and the delivered message are the same).
    pub fn append(
        &self,
        topic: &Arc<str>,
        message: M,
        now: Instant,
        place: impl FnOnce(M, Position) -> M,
        deliver: impl FnOnce(&M),
    ) -> Position {
        let mut logs = self.lock();
        self.expire(&mut logs, now);
        let logs = &mut *logs;
        let log = Self::log(logs, &self.stats, topic);
        log.synced = true;
        log.top += 1;
        let position = Position {
            offset: log.top,
            epoch: log.epoch,
        };
        let message = place(message, position);
        self.store(logs, topic, position.offset, message, now, deliver);
        position
    }

    /// The topic's log, made (with a new epoch) when there is none.
    fn log<'l>(
        logs: &'l mut Logs<M>,
        stats: &HistoryStats,
        topic: &Arc<str>,
    ) -> &'l mut TopicLog<M> {
        if !logs.topics.contains_key(&**topic) {
            // xorshift64: epochs differ between logs and runs; they need not be secret.
            let mut x = logs.rng;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            logs.rng = x;
            logs.topics.insert(
                Arc::clone(topic),
                TopicLog {
                    epoch: Epoch::from_bits((x >> 32) as u32),
                    top: 0,
                    entries: VecDeque::new(),
                    pins: 0,
                    synced: false,
                },
            );
            stats.topics.fetch_add(1, Ordering::Relaxed);
        }
        logs.topics.get_mut(&**topic).expect("just made")
    }

    /// Drops the node's oldest record and its entry if still kept: `Some(true)` when an entry went,
    /// `Some(false)` for the record of one already gone, `None` when there is no record.
    fn drop_oldest(logs: &mut Logs<M>, stats: &HistoryStats) -> Option<bool> {
        let (topic, offset, _) = logs.order.pop_front()?;
        logs.bytes -= RECORD_OVERHEAD;
        let mut dropped = false;
        if let Some(log) = logs.topics.get_mut(&*topic) {
            if log.entries.front().is_some_and(|e| e.offset == offset) {
                let entry = log.entries.pop_front().expect("front");
                logs.bytes -= entry.cost;
                logs.count -= 1;
                dropped = true;
            }
            if log.entries.is_empty() && log.pins == 0 {
                logs.topics.remove(&*topic);
                stats.topics.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Some(dropped)
    }

    /// Drops every entry older than the TTL (all entries have the same TTL, so they expire in order).
    fn expire(&self, logs: &mut Logs<M>, now: Instant) {
        let mut expired = false;
        while logs.order.front().is_some_and(|(_, _, at)| *at <= now) {
            if Self::drop_oldest(logs, &self.stats) == Some(true) {
                self.stats.evicted_ttl.fetch_add(1, Ordering::Relaxed);
            }
            expired = true;
        }
        if expired {
            self.publish_stats(logs);
        }
    }

    fn publish_stats(&self, logs: &Logs<M>) {
        self.stats
            .entries
            .store(logs.count as u64, Ordering::Relaxed);
        self.stats.bytes.store(logs.bytes as u64, Ordering::Relaxed);
    }

    /// Drops what has expired (a worker's tick; skipped when another thread holds the lock).
    pub fn sweep(&self, now: Instant) {
        if let Ok(mut logs) = self.logs.try_lock() {
            if logs.order.front().is_some_and(|(_, _, at)| *at <= now) {
                self.expire(&mut logs, now);
            }
        }
    }

    /// A worker's first subscriber of `topic`: keeps the topic's log (and so its epoch) while the worker
    /// has subscribers, and gives the current position (the worker delivers from the next offset on).
    pub fn pin(&self, topic: &Arc<str>) -> Position {
        let mut logs = self.lock();
        let log = Self::log(&mut logs, &self.stats, topic);
        log.pins += 1;
        log.synced |= !self.mirror;
        Position {
            offset: log.top,
            epoch: log.epoch,
        }
    }

    /// The worker's last subscriber of `topic` left.
    pub fn unpin(&self, topic: &str) {
        let mut logs = self.lock();
        if let Some(log) = logs.topics.get_mut(topic) {
            log.pins = log.pins.saturating_sub(1);
            if log.pins == 0 && self.mirror {
                // The node stops listening to the topic: what the mirror holds is no longer the stream's
                // newest; the next publication from the broker starts it over.
                log.synced = false;
            }
            if log.pins == 0 && log.entries.is_empty() {
                logs.topics.remove(topic);
                self.stats.topics.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Every log of a mirror stops being the stream's newest (the node's link to the broker was down: it
    /// may have missed publications); each starts over at its next publication.
    pub fn unsync_all(&self) {
        let mut logs = self.lock();
        for log in logs.topics.values_mut() {
            log.synced = false;
        }
    }

    /// The topic's current position, if it has a log (in a mirror: one that has had a publication).
    pub fn position(&self, topic: &str) -> Option<Position> {
        let logs = self.lock();
        logs.topics
            .get(topic)
            .filter(|log| log.synced)
            .map(|log| Position {
                offset: log.top,
                epoch: log.epoch,
            })
    }

    /// The publications of `topic` after `from` up to offset `upto` (the last one the asking worker has
    /// delivered), in order, if every one of them is still here and `from` is a position of this log.
    pub fn recover(&self, topic: &str, from: Position, upto: u64, now: Instant) -> Recovery<M> {
        let mut logs = self.lock();
        self.expire(&mut logs, now);
        let Some(log) = logs.topics.get(topic).filter(|log| log.synced) else {
            return Recovery::NotRecovered;
        };
        if log.epoch != from.epoch || from.offset > log.top || upto > log.top {
            return Recovery::NotRecovered;
        }
        if from.offset >= upto {
            return Recovery::Recovered(Vec::new());
        }
        let first = log.entries.front().map_or(log.top + 1, |e| e.offset);
        if first > from.offset + 1 {
            return Recovery::NotRecovered;
        }
        Recovery::Recovered(Self::range(log, from.offset, upto))
    }

    /// The stored publications of `topic` with offsets in `(after, upto]`, in order (a worker catching up
    /// with publications it has not received yet: what is gone is missing from the answer).
    pub fn between(&self, topic: &str, after: u64, upto: u64) -> Vec<(u64, M)> {
        let logs = self.lock();
        logs.topics
            .get(topic)
            .map(|log| Self::range(log, after, upto))
            .unwrap_or_default()
    }

    /// The last `limit` stored publications of `topic` (oldest first) and the current position.
    pub fn last(
        &self,
        topic: &str,
        limit: usize,
        now: Instant,
    ) -> Option<(Position, Vec<(u64, M)>)> {
        let mut logs = self.lock();
        self.expire(&mut logs, now);
        let log = logs.topics.get(topic).filter(|log| log.synced)?;
        let skip = log.entries.len().saturating_sub(limit);
        let entries = log
            .entries
            .iter()
            .skip(skip)
            .map(|e| (e.offset, e.message.clone()))
            .collect();
        Some((
            Position {
                offset: log.top,
                epoch: log.epoch,
            },
            entries,
        ))
    }

    fn range(log: &TopicLog<M>, after: u64, upto: u64) -> Vec<(u64, M)> {
        let Some(first) = log.entries.front().map(|e| e.offset) else {
            return Vec::new();
        };
        let start = (after + 1).saturating_sub(first) as usize;
        log.entries
            .iter()
            .skip(start)
            .take_while(|e| e.offset <= upto)
            .map(|e| (e.offset, e.message.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Msg(&'static str, Option<u64>);

    impl Stored for Msg {
        fn stored_bytes(&self) -> usize {
            self.0.len()
        }
    }

    fn history(size: usize, ttl_ms: u64, max_bytes: usize) -> History<Msg> {
        History::new(
            HistoryConfig {
                size,
                ttl: Duration::from_millis(ttl_ms),
                max_bytes,
            },
            42,
        )
    }

    fn append(h: &History<Msg>, topic: &Arc<str>, text: &'static str, now: Instant) -> Position {
        let mut delivered = None;
        let position = h.append(
            topic,
            Msg(text, None),
            now,
            |m, p| Msg(m.0, Some(p.offset)),
            |m| delivered = Some(m.clone()),
        );
        assert_eq!(delivered, Some(Msg(text, Some(position.offset))));
        position
    }

    fn offsets(entries: &[(u64, Msg)]) -> Vec<u64> {
        entries.iter().map(|(o, _)| *o).collect()
    }

    #[test]
    fn offsets_count_from_one_per_topic_in_one_epoch() {
        let h = history(10, 60_000, 1 << 20);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let now = Instant::now();
        let a1 = append(&h, &a, "x", now);
        let a2 = append(&h, &a, "y", now);
        let b1 = append(&h, &b, "z", now);
        assert_eq!((a1.offset, a2.offset, b1.offset), (1, 2, 1));
        assert_eq!(a1.epoch, a2.epoch);
        assert_ne!(a1.epoch, b1.epoch, "each log has its own epoch");
        assert_eq!(Epoch::parse(a1.epoch.as_str()), Some(a1.epoch));
        assert_eq!(h.position("a"), Some(a2));
    }

    #[test]
    fn recovery_gives_exactly_the_gap_or_nothing() {
        let h = history(3, 60_000, 1 << 20);
        let t: Arc<str> = Arc::from("t");
        let now = Instant::now();
        let p1 = append(&h, &t, "1", now);
        for text in ["2", "3"] {
            append(&h, &t, text, now);
        }
        match h.recover("t", p1, 3, now) {
            Recovery::Recovered(entries) => assert_eq!(offsets(&entries), [2, 3]),
            other => panic!("{other:?}"),
        }
        // Up to what the worker delivered, not further.
        match h.recover("t", p1, 2, now) {
            Recovery::Recovered(entries) => assert_eq!(offsets(&entries), [2]),
            other => panic!("{other:?}"),
        }
        append(&h, &t, "4", now);
        append(&h, &t, "5", now); // size 3: 3, 4, 5 kept
        assert_eq!(
            h.recover("t", p1, 5, now),
            Recovery::NotRecovered,
            "2 is gone"
        );
        let p2 = Position { offset: 2, ..p1 };
        match h.recover("t", p2, 5, now) {
            Recovery::Recovered(entries) => assert_eq!(offsets(&entries), [3, 4, 5]),
            other => panic!("{other:?}"),
        }
        let other_epoch = Position {
            offset: 4,
            epoch: Epoch::parse("00000000").unwrap(),
        };
        assert_eq!(h.recover("t", other_epoch, 5, now), Recovery::NotRecovered);
        let future = Position { offset: 9, ..p1 };
        assert_eq!(h.recover("t", future, 5, now), Recovery::NotRecovered);
        assert_eq!(
            h.recover("t", Position { offset: 5, ..p1 }, 5, now),
            Recovery::Recovered(vec![])
        );
    }

    #[test]
    fn entries_expire_after_the_ttl_and_an_unpinned_empty_log_goes_with_its_epoch() {
        let h = history(10, 100, 1 << 20);
        let t: Arc<str> = Arc::from("t");
        let now = Instant::now();
        let p1 = append(&h, &t, "1", now);
        append(&h, &t, "2", now);
        let later = now + Duration::from_millis(150);
        h.sweep(later);
        assert_eq!(h.stats.evicted_ttl.load(Ordering::Relaxed), 2);
        assert_eq!(h.stats.entries.load(Ordering::Relaxed), 0);
        assert_eq!(
            h.position("t"),
            None,
            "nothing kept, nobody subscribed: the log is gone"
        );
        let again = append(&h, &t, "3", later);
        assert_eq!(again.offset, 1);
        assert_ne!(again.epoch, p1.epoch, "a new log, a new epoch");
        assert_eq!(h.recover("t", p1, 1, later), Recovery::NotRecovered);
    }

    #[test]
    fn a_pinned_log_keeps_its_epoch_and_offsets_when_empty() {
        let h = history(10, 100, 1 << 20);
        let t: Arc<str> = Arc::from("t");
        let now = Instant::now();
        let p0 = h.pin(&t);
        assert_eq!(p0.offset, 0);
        append(&h, &t, "1", now);
        let later = now + Duration::from_millis(150);
        h.sweep(later);
        let p = h.position("t").expect("pinned");
        assert_eq!((p.offset, p.epoch), (1, p0.epoch));
        // A client at offset 1 has missed nothing: recovered though the entry is gone.
        assert_eq!(h.recover("t", p, 1, later), Recovery::Recovered(vec![]));
        // A client at 0 missed offset 1, which is gone.
        assert_eq!(h.recover("t", p0, 1, later), Recovery::NotRecovered);
        h.unpin("t");
        assert_eq!(h.position("t"), None);
    }

    #[test]
    fn the_byte_budget_drops_the_oldest_entry_of_the_node() {
        let per = 10 + ENTRY_OVERHEAD + RECORD_OVERHEAD;
        let h = history(100, 60_000, 3 * per);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let now = Instant::now();
        append(&h, &a, "aaaaaaaaaa", now);
        append(&h, &b, "bbbbbbbbbb", now);
        append(&h, &a, "cccccccccc", now);
        append(&h, &b, "dddddddddd", now); // over: a's first goes
        assert_eq!(h.stats.evicted_bytes.load(Ordering::Relaxed), 1);
        assert_eq!(h.stats.bytes.load(Ordering::Relaxed) as usize, 3 * per);
        let (pos, entries) = h.last("a", 10, now).unwrap();
        assert_eq!((pos.offset, offsets(&entries)), (2, vec![2]));
        let (_, entries) = h.last("b", 1, now).unwrap();
        assert_eq!(offsets(&entries), [2]);
        assert_eq!(offsets(&h.between("b", 0, 2)), [1, 2]);
    }

    fn insert(
        h: &History<Msg>,
        topic: &Arc<str>,
        offset: u64,
        epoch: &str,
        now: Instant,
    ) -> Inserted {
        let position = Position {
            offset,
            epoch: Epoch::parse(epoch).unwrap(),
        };
        h.insert(topic, position, Msg("m", Some(offset)), now, |_| {})
    }

    #[test]
    fn a_mirror_follows_the_streams_offsets_epochs_and_gaps() {
        let h = History::mirror(
            HistoryConfig {
                size: 10,
                ttl: Duration::from_secs(60),
                max_bytes: 1 << 20,
            },
            7,
        );
        let t: Arc<str> = Arc::from("t");
        let now = Instant::now();
        let placeholder = h.pin(&t);
        assert_eq!(
            h.position("t"),
            None,
            "a pinned mirror log has no position before its first"
        );
        assert_eq!(h.recover("t", placeholder, 0, now), Recovery::NotRecovered);
        // The stream is at 41 when this node starts listening.
        assert_eq!(insert(&h, &t, 41, "0000000a", now), Inserted::Next);
        assert_eq!(insert(&h, &t, 42, "0000000a", now), Inserted::Next);
        assert_eq!(insert(&h, &t, 42, "0000000a", now), Inserted::Old);
        let at41 = Position {
            offset: 41,
            epoch: Epoch::parse("0000000a").unwrap(),
        };
        assert_eq!(h.position("t"), Some(Position { offset: 42, ..at41 }));
        match h.recover("t", at41, 42, now) {
            Recovery::Recovered(entries) => assert_eq!(offsets(&entries), [42]),
            other => panic!("{other:?}"),
        }
        // After 40: 41 and 42, both seen here; after 39: 40 was never seen here.
        match h.recover("t", Position { offset: 40, ..at41 }, 42, now) {
            Recovery::Recovered(entries) => assert_eq!(offsets(&entries), [41, 42]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            h.recover("t", Position { offset: 39, ..at41 }, 42, now),
            Recovery::NotRecovered
        );
        // A gap: the log starts over after it.
        assert_eq!(insert(&h, &t, 45, "0000000a", now), Inserted::AfterGap(2));
        assert_eq!(h.recover("t", at41, 45, now), Recovery::NotRecovered);
        // Another epoch: starts over too.
        assert_eq!(insert(&h, &t, 1, "0000000b", now), Inserted::NewEpoch);
        assert_eq!(h.position("t").unwrap().epoch.as_str(), "0000000b");
        assert_eq!(h.stats.entries.load(Ordering::Relaxed), 1);
    }

    /// A topic whose size bound drops entries at a high rate does not push another topic's kept entries
    /// out of the byte budget: what the size bound dropped is no longer counted (only its small record).
    #[test]
    fn entries_dropped_by_the_size_bound_leave_the_byte_budget_to_the_others() {
        let per_entry = 10 + ENTRY_OVERHEAD;
        let h = history(1, 60_000, 3 * per_entry + 20 * RECORD_OVERHEAD);
        let (quiet, hot): (Arc<str>, Arc<str>) = (Arc::from("quiet"), Arc::from("hot"));
        let now = Instant::now();
        append(&h, &quiet, "qqqqqqqqqq", now);
        for _ in 0..10 {
            append(&h, &hot, "hhhhhhhhhh", now);
        }
        let (_, kept) = h.last("quiet", 10, now).expect("quiet's log");
        assert_eq!(offsets(&kept), [1], "quiet's publication is still kept");
        assert_eq!(h.stats.evicted_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(
            h.stats.bytes.load(Ordering::Relaxed) as usize,
            2 * per_entry + 11 * RECORD_OVERHEAD
        );
    }

    #[test]
    fn the_size_bound_holds_per_topic_and_the_node_order_skips_what_it_dropped() {
        let h = history(2, 60_000, 1 << 20);
        let t: Arc<str> = Arc::from("t");
        let now = Instant::now();
        for text in ["1", "2", "3", "4"] {
            append(&h, &t, text, now);
        }
        assert_eq!(h.stats.evicted_size.load(Ordering::Relaxed), 2);
        let (_, entries) = h.last("t", 10, now).unwrap();
        assert_eq!(offsets(&entries), [3, 4]);
        assert_eq!(h.stats.entries.load(Ordering::Relaxed), 2);
        // The entries kept, and the records of all four (1 and 2's until reached).
        assert_eq!(
            h.stats.bytes.load(Ordering::Relaxed) as usize,
            2 * (1 + ENTRY_OVERHEAD) + 4 * RECORD_OVERHEAD
        );
        // The expiry order still lists 1 and 2; reaching them drops nothing that is still kept.
        h.sweep(now + Duration::from_secs(61));
        assert_eq!(h.stats.evicted_ttl.load(Ordering::Relaxed), 2);
        assert_eq!(h.stats.bytes.load(Ordering::Relaxed), 0);
    }
}
