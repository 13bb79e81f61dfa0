//! The topic table: which subscribers each topic has, in subscribe order, and which topics each
//! subscriber holds, with the per-subscriber subscription limit.
//!
//! One table per worker (owned by whoever serves that worker's subscribers), so no lock. Generic over the
//! subscriber id (the server's `ConnId` in practice); it never sees a connection, a socket or a clock.
//! Subscribe, unsubscribe and removal allocate (topic names, table entries); looking up a topic's
//! subscribers (the publish path) allocates nothing. Subscribe and unsubscribe report when a topic gains
//! its first or loses its last subscriber, which is when a node-wide broker would join or leave it.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

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
    /// Subscribers of each topic, in subscribe order; a topic with none has no entry.
    topics: HashMap<Box<str>, Vec<S>>,
    /// Topics of each subscriber, in subscribe order.
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
        subscribers.push(subscriber);
        Ok(Subscribed {
            first: subscribers.len() == 1,
        })
    }

    /// Unsubscribes `subscriber` from `topic`; nothing happens if it was not subscribed.
    pub fn unsubscribe(&mut self, subscriber: S, topic: &str) -> Unsubscribed {
        if let Some(held) = self.subscriptions.get_mut(&subscriber) {
            held.retain(|t| &**t != topic);
        }
        let mut last = false;
        if let Some(subscribers) = self.topics.get_mut(topic) {
            subscribers.retain(|s| *s != subscriber);
            if subscribers.is_empty() {
                self.topics.remove(topic);
                last = true;
            }
        }
        Unsubscribed { last }
    }

    /// Removes `subscriber` from every topic it held (it closed). Returns the topics it was the last
    /// subscriber of.
    pub fn remove_subscriber(&mut self, subscriber: S) -> Vec<Box<str>> {
        let Some(mut held) = self.subscriptions.remove(&subscriber) else {
            return Vec::new();
        };
        held.retain(|topic| {
            let Some(subscribers) = self.topics.get_mut(topic) else {
                return false;
            };
            subscribers.retain(|s| *s != subscriber);
            if subscribers.is_empty() {
                self.topics.remove(topic);
                true
            } else {
                false
            }
        });
        held
    }

    /// The subscribers of `topic`, in subscribe order (empty if none).
    pub fn subscribers(&self, topic: &str) -> &[S] {
        self.topics.get(topic).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(first: bool) -> Result<Subscribed, SubscribeError> {
        Ok(Subscribed { first })
    }

    #[test]
    fn subscribers_come_in_subscribe_order() {
        let mut table = TopicTable::new(4);
        for s in [3u32, 1, 2] {
            table.subscribe(s, "news").unwrap();
        }
        table.subscribe(9, "sport").unwrap();
        assert_eq!(table.subscribers("news"), [3, 1, 2]);
        assert_eq!(table.subscribers("sport"), [9]);
        assert!(table.subscribers("weather").is_empty());
        table.unsubscribe(1, "news");
        table.subscribe(1, "news").unwrap();
        assert_eq!(
            table.subscribers("news"),
            [3, 2, 1],
            "a resubscribe goes last"
        );
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
        assert!(table.subscribers("a").is_empty());
        assert!(table.topics.is_empty(), "an empty topic keeps no entry");
    }

    #[test]
    fn a_duplicate_subscribe_succeeds_once() {
        let mut table = TopicTable::new(1);
        assert_eq!(table.subscribe(1u32, "a"), first(true));
        assert_eq!(table.subscribe(1, "a"), first(false));
        assert_eq!(table.subscribers("a"), [1], "listed once, delivered once");
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
        assert!(table.subscribers("c").is_empty());
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
        assert_eq!(table.subscribers("c"), [2, 1]);
    }

    #[test]
    fn a_zero_limit_refuses_every_subscribe() {
        let mut table = TopicTable::new(0);
        assert_eq!(
            table.subscribe(1u32, "a"),
            Err(SubscribeError::LimitReached)
        );
        assert!(table.subscribers("a").is_empty());
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
        assert_eq!(table.subscribers("shared"), [2, 3]);
        assert!(table.subscribers("alone").is_empty());
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
}
