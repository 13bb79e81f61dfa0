//! The topic table: which subscribers each topic has and which topics each subscriber holds, with the
//! per-subscriber subscription limit.
//!
//! One table per worker (owned by whoever serves that worker's subscribers), so no lock. Generic over the
//! subscriber id (the server's `ConnId` in practice); it never sees a connection, a socket or a clock.
//! Subscribe, unsubscribe and removal allocate (topic names, table entries); iterating a topic's subscribers
//! (the publish path) allocates nothing. Subscribe and unsubscribe report when a topic gains its first or
//! loses its last subscriber, which is when a node-wide broker would join or leave it.
//!
//! Cost: each topic keeps its subscribers in an insertion-ordered hash set, so subscribe, unsubscribe and
//! removal on close cost the same however many subscribers the topic has (a mass disconnect of a big topic
//! is linear, not quadratic); a subscriber's own topics are a list bounded by the limit. Order among a
//! topic's subscribers is not kept: a removal moves the topic's last subscriber into the freed place.
//! Delivery order is unaffected: each message is one pass over the subscribers, so one publisher's
//! messages still reach every subscriber in publish order.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::iter::FusedIterator;

use indexmap::IndexSet;

use super::name::{valid_topic, INVALID_TOPIC};

/// Why a subscribe was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The name breaks the topic name rules ([`valid_topic`]).
    InvalidTopic,
    /// The subscriber already holds the most subscriptions it may.
    LimitReached,
}

impl SubscribeError {
    /// The error text sent to the client.
    pub fn message(self) -> &'static str {
        match self {
            SubscribeError::InvalidTopic => INVALID_TOPIC,
            SubscribeError::LimitReached => "subscription limit reached",
        }
    }
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for SubscribeError {}

/// A subscribe that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// The topic went from no subscriber to one. `false` also when the subscriber already held it.
    pub first: bool,
}

/// The outcome of an unsubscribe (which always succeeds, subscribed or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribed {
    /// The topic went from one subscriber to none.
    pub last: bool,
}

/// Topic -> its subscribers and subscriber -> its topics, kept in step.
pub struct TopicTable<S> {
    /// Subscribers of each topic, no order promised; a topic with none has no entry.
    topics: HashMap<Box<str>, IndexSet<S>>,
    /// Topics of each subscriber (at most `max_subscriptions`), in subscribe order.
    subscriptions: HashMap<S, Vec<Box<str>>>,
    /// Most topics one subscriber may hold.
    max_subscriptions: usize,
}

impl<S: Copy + Eq + Hash> TopicTable<S> {
    /// An empty table whose subscribers may hold up to `max_subscriptions` topics each.
    pub fn new(max_subscriptions: usize) -> TopicTable<S> {
        TopicTable {
            topics: HashMap::new(),
            subscriptions: HashMap::new(),
            max_subscriptions,
        }
    }

    /// Subscribes `subscriber` to `topic`. A name is checked before anything else; subscribing again to a
    /// topic already held succeeds without counting against the limit.
    pub fn subscribe(&mut self, subscriber: S, topic: &str) -> Result<Subscribed, SubscribeError> {
        if !valid_topic(topic) {
            return Err(SubscribeError::InvalidTopic);
        }
        let held = self.subscriptions.entry(subscriber).or_default();
        if held.iter().any(|t| &**t == topic) {
            return Ok(Subscribed { first: false });
        }
        if held.len() >= self.max_subscriptions {
            return Err(SubscribeError::LimitReached);
        }
        held.push(topic.into());
        let subscribers = self.topics.entry(topic.into()).or_default();
        subscribers.insert(subscriber);
        Ok(Subscribed {
            first: subscribers.len() == 1,
        })
    }

    /// Unsubscribes `subscriber` from `topic`; nothing happens if it was not subscribed.
    pub fn unsubscribe(&mut self, subscriber: S, topic: &str) -> Unsubscribed {
        let Some(held) = self.subscriptions.get_mut(&subscriber) else {
            return Unsubscribed { last: false };
        };
        let Some(at) = held.iter().position(|t| &**t == topic) else {
            return Unsubscribed { last: false };
        };
        held.remove(at);
        Unsubscribed {
            last: self.leave(subscriber, topic),
        }
    }

    /// Removes `subscriber` from every topic it held (it closed). Returns the topics it was the last
    /// subscriber of.
    pub fn remove_subscriber(&mut self, subscriber: S) -> Vec<Box<str>> {
        let Some(mut held) = self.subscriptions.remove(&subscriber) else {
            return Vec::new();
        };
        held.retain(|topic| self.leave(subscriber, topic));
        held
    }

    /// The topics `subscriber` holds, in subscribe order.
    pub fn topics_of(&self, subscriber: S) -> &[Box<str>] {
        self.subscriptions
            .get(&subscriber)
            .map_or(&[], Vec::as_slice)
    }

    /// Whether `subscriber` holds `topic`.
    pub fn holds(&self, subscriber: S, topic: &str) -> bool {
        self.topics_of(subscriber).iter().any(|t| &**t == topic)
    }

    /// Whether `topic` has any subscriber.
    pub fn has_subscribers(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// The subscribers of `topic` (none if it has none), each once, in no promised order.
    pub fn subscribers(&self, topic: &str) -> Subscribers<'_, S> {
        Subscribers {
            inner: self.topics.get(topic).map(IndexSet::iter),
        }
    }

    /// Takes `subscriber` out of `topic`'s subscribers in constant time (the topic's last subscriber takes
    /// its place); drops the topic's entry and returns `true` when it was the last one.
    fn leave(&mut self, subscriber: S, topic: &str) -> bool {
        let Some(subscribers) = self.topics.get_mut(topic) else {
            return false;
        };
        subscribers.swap_remove(&subscriber);
        if subscribers.is_empty() {
            self.topics.remove(topic);
            true
        } else {
            false
        }
    }
}

/// The subscribers of one topic ([`TopicTable::subscribers`]): borrows the table, allocates nothing.
pub struct Subscribers<'a, S> {
    inner: Option<indexmap::set::Iter<'a, S>>,
}

impl<S: Copy> Iterator for Subscribers<'_, S> {
    type Item = S;

    fn next(&mut self) -> Option<S> {
        self.inner.as_mut()?.next().copied()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner
            .as_ref()
            .map_or((0, Some(0)), Iterator::size_hint)
    }
}

impl<S: Copy> ExactSizeIterator for Subscribers<'_, S> {}

impl<S: Copy> FusedIterator for Subscribers<'_, S> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(first: bool) -> Result<Subscribed, SubscribeError> {
        Ok(Subscribed { first })
    }

    /// The subscribers of `topic`, sorted (the table promises no order among them).
    fn sorted(table: &TopicTable<u32>, topic: &str) -> Vec<u32> {
        let mut subscribers: Vec<u32> = table.subscribers(topic).collect();
        subscribers.sort_unstable();
        subscribers
    }

    #[test]
    fn each_topic_lists_its_subscribers_once() {
        let mut table = TopicTable::new(4);
        for s in [3u32, 1, 2] {
            table.subscribe(s, "news").unwrap();
        }
        table.subscribe(9, "sport").unwrap();
        assert_eq!(sorted(&table, "news"), [1, 2, 3]);
        assert_eq!(
            table.subscribers("news").len(),
            3,
            "the exact size is known"
        );
        assert_eq!(sorted(&table, "sport"), [9]);
        assert_eq!(table.subscribers("weather").next(), None);
        assert_eq!(table.subscribers("weather").len(), 0);
        table.unsubscribe(1, "news");
        assert_eq!(sorted(&table, "news"), [2, 3]);
        table.subscribe(1, "news").unwrap();
        assert_eq!(
            sorted(&table, "news"),
            [1, 2, 3],
            "a resubscribe is listed again"
        );
    }

    #[test]
    fn a_removal_fills_the_gap_and_keeps_the_others() {
        let mut table = TopicTable::new(4);
        for s in 0u32..5 {
            table.subscribe(s, "t").unwrap();
        }
        table.unsubscribe(1, "t");
        assert_eq!(sorted(&table, "t"), [0, 2, 3, 4]);
        table.remove_subscriber(0);
        assert_eq!(sorted(&table, "t"), [2, 3, 4]);
        table.unsubscribe(4, "t");
        assert_eq!(sorted(&table, "t"), [2, 3], "the last one removed");
        table.subscribe(1, "t").unwrap();
        assert_eq!(sorted(&table, "t"), [1, 2, 3]);
        assert_eq!(table.unsubscribe(2, "t"), Unsubscribed { last: false });
        assert_eq!(table.unsubscribe(3, "t"), Unsubscribed { last: false });
        assert_eq!(table.unsubscribe(1, "t"), Unsubscribed { last: true });
    }

    std::thread_local! {
        /// Equality checks made by [`Counted`] on this thread.
        static COMPARISONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A subscriber id that counts how often it is compared.
    #[derive(Debug, Clone, Copy)]
    struct Counted(u32);

    impl Hash for Counted {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    impl PartialEq for Counted {
        fn eq(&self, other: &Counted) -> bool {
            COMPARISONS.with(|c| c.set(c.get() + 1));
            self.0 == other.0
        }
    }

    impl Eq for Counted {}

    fn comparisons_during(f: impl FnOnce()) -> usize {
        let before = COMPARISONS.with(std::cell::Cell::get);
        f();
        COMPARISONS.with(std::cell::Cell::get) - before
    }

    #[test]
    fn leaving_a_big_topic_does_not_look_at_its_other_subscribers() {
        const SUBSCRIBERS: u32 = 10_000;
        let mut table = TopicTable::new(2);
        for s in 0..SUBSCRIBERS {
            table.subscribe(Counted(s), "big").unwrap();
        }
        table.subscribe(Counted(7), "small").unwrap();
        let unsubscribe = comparisons_during(|| {
            table.unsubscribe(Counted(SUBSCRIBERS / 2), "big");
        });
        let close = comparisons_during(|| {
            table.remove_subscriber(Counted(7));
        });
        let absent = comparisons_during(|| {
            table.unsubscribe(Counted(SUBSCRIBERS / 2), "big");
        });
        assert!(unsubscribe <= 8, "unsubscribe compared {unsubscribe} ids");
        assert!(close <= 8, "close compared {close} ids");
        assert!(absent <= 8, "a repeated unsubscribe compared {absent} ids");
        assert_eq!(table.subscribers("big").len(), SUBSCRIBERS as usize - 2);
        assert_eq!(table.subscribers("small").len(), 0);
    }

    #[test]
    fn the_first_subscriber_of_a_topic_is_reported() {
        let mut table = TopicTable::new(4);
        assert_eq!(table.subscribe(1u32, "a"), first(true));
        assert_eq!(table.subscribe(2, "a"), first(false));
        assert_eq!(table.subscribe(2, "b"), first(true));
        table.unsubscribe(1, "a");
        table.unsubscribe(2, "a");
        assert_eq!(
            table.subscribe(2, "a"),
            first(true),
            "a topic emptied and joined again"
        );
    }

    #[test]
    fn the_last_subscriber_of_a_topic_is_reported() {
        let mut table = TopicTable::new(4);
        table.subscribe(1u32, "a").unwrap();
        table.subscribe(2, "a").unwrap();
        assert_eq!(table.unsubscribe(1, "a"), Unsubscribed { last: false });
        assert_eq!(
            table.unsubscribe(1, "a"),
            Unsubscribed { last: false },
            "not subscribed"
        );
        assert_eq!(
            table.unsubscribe(3, "a"),
            Unsubscribed { last: false },
            "unknown subscriber"
        );
        assert_eq!(table.unsubscribe(2, "a"), Unsubscribed { last: true });
        assert_eq!(
            table.unsubscribe(2, "a"),
            Unsubscribed { last: false },
            "already empty"
        );
        assert_eq!(table.subscribers("a").len(), 0);
        assert!(table.topics.is_empty(), "an empty topic keeps no entry");
    }

    #[test]
    fn a_duplicate_subscribe_succeeds_once() {
        let mut table = TopicTable::new(1);
        assert_eq!(table.subscribe(1u32, "a"), first(true));
        assert_eq!(table.subscribe(1, "a"), first(false));
        assert_eq!(sorted(&table, "a"), [1], "listed once, delivered once");
        assert_eq!(table.unsubscribe(1, "a"), Unsubscribed { last: true });
    }

    #[test]
    fn the_limit_counts_topics_held_not_attempts() {
        let mut table = TopicTable::new(2);
        table.subscribe(1u32, "a").unwrap();
        table.subscribe(1, "b").unwrap();
        assert_eq!(
            table.subscribe(1, "a"),
            first(false),
            "a held topic is not refused"
        );
        assert_eq!(table.subscribe(1, "c"), Err(SubscribeError::LimitReached));
        assert_eq!(table.subscribers("c").len(), 0);
        assert_eq!(
            table.subscribe(2, "c"),
            first(true),
            "the limit is per subscriber"
        );
        table.unsubscribe(1, "a");
        assert_eq!(
            table.subscribe(1, "c"),
            first(false),
            "an unsubscribe frees a place"
        );
        assert_eq!(sorted(&table, "c"), [1, 2]);
    }

    #[test]
    fn a_zero_limit_refuses_every_subscribe() {
        let mut table = TopicTable::new(0);
        assert_eq!(
            table.subscribe(1u32, "a"),
            Err(SubscribeError::LimitReached)
        );
        assert_eq!(table.subscribers("a").len(), 0);
    }

    #[test]
    fn an_invalid_name_is_refused_before_the_limit() {
        let mut table = TopicTable::new(0);
        assert_eq!(
            table.subscribe(1u32, "a b"),
            Err(SubscribeError::InvalidTopic)
        );
        assert_eq!(table.subscribe(1, ""), Err(SubscribeError::InvalidTopic));
        let mut table = TopicTable::new(4);
        assert_eq!(
            table.subscribe(1u32, "a b"),
            Err(SubscribeError::InvalidTopic)
        );
        assert!(table.topics.is_empty());
    }

    #[test]
    fn errors_carry_the_client_text() {
        assert_eq!(
            SubscribeError::InvalidTopic.to_string(),
            "invalid topic (1-64 of A-Z a-z 0-9 . _ - : /)"
        );
        assert_eq!(
            SubscribeError::LimitReached.message(),
            "subscription limit reached"
        );
    }

    #[test]
    fn removal_on_close_leaves_every_topic_and_reports_the_emptied_ones() {
        let mut table = TopicTable::new(4);
        table.subscribe(1u32, "shared").unwrap();
        table.subscribe(2, "shared").unwrap();
        table.subscribe(1, "alone").unwrap();
        table.subscribe(1, "also-alone").unwrap();
        table.subscribe(3, "shared").unwrap();
        let mut emptied = table.remove_subscriber(1);
        emptied.sort();
        assert_eq!(emptied, [Box::from("alone"), Box::from("also-alone")]);
        assert_eq!(sorted(&table, "shared"), [2, 3]);
        assert_eq!(table.subscribers("alone").len(), 0);
        assert_eq!(table.topics.len(), 1, "emptied topics keep no entry");
        assert!(
            !table.subscriptions.contains_key(&1),
            "a closed subscriber keeps no entry"
        );
        assert!(
            table.remove_subscriber(1).is_empty(),
            "a second removal is a no-op"
        );
        assert!(
            table.remove_subscriber(7).is_empty(),
            "an unknown subscriber"
        );
        assert_eq!(
            table.subscribe(1, "alone"),
            first(true),
            "the id can be used again"
        );
    }

    /// The same rules written the plain way: sets, no positions.
    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::{BTreeMap, BTreeSet};

        const LIMIT: usize = 3;
        const TOPICS: [&str; 5] = ["a", "b", "c", "d", "not valid"];

        #[derive(Debug, Clone)]
        enum Op {
            Subscribe(u32, usize),
            Unsubscribe(u32, usize),
            Close(u32),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u32..8, 0..TOPICS.len()).prop_map(|(s, t)| Op::Subscribe(s, t)),
                2 => (0u32..8, 0..TOPICS.len()).prop_map(|(s, t)| Op::Unsubscribe(s, t)),
                1 => (0u32..8).prop_map(Op::Close),
            ]
        }

        #[derive(Default)]
        struct Model {
            held: BTreeMap<u32, BTreeSet<&'static str>>,
        }

        impl Model {
            fn subscribers(&self, topic: &str) -> Vec<u32> {
                let holds =
                    |(s, topics): (&u32, &BTreeSet<&str>)| topics.contains(topic).then_some(*s);
                self.held.iter().filter_map(holds).collect()
            }

            fn subscribe(
                &mut self,
                s: u32,
                topic: &'static str,
            ) -> Result<Subscribed, SubscribeError> {
                if !valid_topic(topic) {
                    return Err(SubscribeError::InvalidTopic);
                }
                let first = self.subscribers(topic).is_empty();
                let held = self.held.entry(s).or_default();
                if held.contains(topic) {
                    return Ok(Subscribed { first: false });
                }
                if held.len() >= LIMIT {
                    return Err(SubscribeError::LimitReached);
                }
                held.insert(topic);
                Ok(Subscribed { first })
            }

            fn unsubscribe(&mut self, s: u32, topic: &str) -> Unsubscribed {
                let removed = self.held.get_mut(&s).is_some_and(|held| held.remove(topic));
                Unsubscribed {
                    last: removed && self.subscribers(topic).is_empty(),
                }
            }

            fn close(&mut self, s: u32) -> Vec<&'static str> {
                let held = self.held.remove(&s).unwrap_or_default();
                held.into_iter()
                    .filter(|t| self.subscribers(t).is_empty())
                    .collect()
            }
        }

        proptest! {
            #[test]
            fn the_table_agrees_with_the_model(ops in proptest::collection::vec(op(), 0..200)) {
                let mut table = TopicTable::new(LIMIT);
                let mut model = Model::default();
                for op in ops {
                    match op {
                        Op::Subscribe(s, t) => {
                            prop_assert_eq!(table.subscribe(s, TOPICS[t]), model.subscribe(s, TOPICS[t]));
                        }
                        Op::Unsubscribe(s, t) => {
                            prop_assert_eq!(table.unsubscribe(s, TOPICS[t]), model.unsubscribe(s, TOPICS[t]));
                        }
                        Op::Close(s) => {
                            let mut emptied = table.remove_subscriber(s);
                            emptied.sort();
                            let expected: Vec<Box<str>> = model.close(s).into_iter().map(Box::from).collect();
                            prop_assert_eq!(emptied, expected);
                        }
                    }
                    for topic in TOPICS {
                        let listed = table.subscribers(topic);
                        prop_assert_eq!(listed.len(), listed.count());
                        prop_assert_eq!(sorted(&table, topic), model.subscribers(topic));
                    }
                    prop_assert!(table.topics.values().all(|subscribers| !subscribers.is_empty()),
                        "an empty topic keeps no entry");
                }
            }
        }
    }
}
