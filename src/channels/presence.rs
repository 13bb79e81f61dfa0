//! Who is in each topic on this node: members (client id, user id, client info), counts of connections
//! and of distinct users.
//!
//! A member joins when one of its subscriptions starts and leaves when it ends by whatever ends it
//! (unsubscribe, close, TCP reset, idle or ping timeout: the server's `on_close` covers them all), so the
//! store is bounded by the node's subscriptions. One lock for the node, taken per join, leave and query,
//! never per message. No I/O, no clock, no server types.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One connection's presence in a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The connection's id, unique on the node while it is open.
    pub client: Arc<str>,
    /// The token's `sub` (empty for an anonymous connection).
    pub user: Arc<str>,
    /// The token's `info` claim as JSON text, if any.
    pub info: Option<Arc<str>>,
}

#[derive(Default)]
struct Members {
    by_client: HashMap<Arc<str>, Member>,
    /// Connections of each user in the topic.
    users: HashMap<Arc<str>, u32>,
}

/// Node-wide figures for `/metrics`.
#[derive(Debug, Default)]
pub struct PresenceStats {
    pub topics: AtomicU64,
    pub members: AtomicU64,
    pub joins: AtomicU64,
    pub leaves: AtomicU64,
}

/// The node's presence, behind one lock.
#[derive(Default)]
pub struct Presence {
    topics: Mutex<HashMap<Arc<str>, Members>>,
    pub stats: PresenceStats,
}

impl Presence {
    pub fn new() -> Presence {
        Presence::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Members>> {
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `member` joins `topic`; false if that client was in it already.
    pub fn join(&self, topic: &str, member: &Member) -> bool {
        let mut topics = self.lock();
        if !topics.contains_key(topic) {
            topics.insert(Arc::from(topic), Members::default());
            self.stats.topics.fetch_add(1, Ordering::Relaxed);
        }
        let members = topics.get_mut(topic).expect("just made");
        if members.by_client.contains_key(&member.client) {
            return false;
        }
        members
            .by_client
            .insert(Arc::clone(&member.client), member.clone());
        *members.users.entry(Arc::clone(&member.user)).or_default() += 1;
        self.stats.members.fetch_add(1, Ordering::Relaxed);
        self.stats.joins.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// `client` leaves `topic`: its member entry, if it was in it.
    pub fn leave(&self, topic: &str, client: &str) -> Option<Member> {
        let mut topics = self.lock();
        let members = topics.get_mut(topic)?;
        let member = members.by_client.remove(client)?;
        if let Some(count) = members.users.get_mut(&member.user) {
            *count -= 1;
            if *count == 0 {
                members.users.remove(&member.user);
            }
        }
        if members.by_client.is_empty() {
            topics.remove(topic);
            self.stats.topics.fetch_sub(1, Ordering::Relaxed);
        }
        self.stats.members.fetch_sub(1, Ordering::Relaxed);
        self.stats.leaves.fetch_add(1, Ordering::Relaxed);
        Some(member)
    }

    /// The members of `topic` (in no particular order), and the counts of connections and of distinct
    /// users.
    pub fn members(&self, topic: &str) -> (Vec<Member>, usize, usize) {
        let topics = self.lock();
        match topics.get(topic) {
            Some(members) => (
                members.by_client.values().cloned().collect(),
                members.by_client.len(),
                members.users.len(),
            ),
            None => (Vec::new(), 0, 0),
        }
    }

    /// The counts of connections and of distinct users in `topic`.
    pub fn counts(&self, topic: &str) -> (usize, usize) {
        let topics = self.lock();
        topics
            .get(topic)
            .map_or((0, 0), |m| (m.by_client.len(), m.users.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(client: &str, user: &str) -> Member {
        Member {
            client: Arc::from(client),
            user: Arc::from(user),
            info: None,
        }
    }

    #[test]
    fn members_and_distinct_users_follow_joins_and_leaves() {
        let p = Presence::new();
        assert!(p.join("room", &member("c1", "alice")));
        assert!(p.join("room", &member("c2", "alice")));
        assert!(p.join("room", &member("c3", "bob")));
        assert!(!p.join("room", &member("c3", "bob")), "already in");
        assert_eq!(p.counts("room"), (3, 2));
        assert_eq!(p.leave("room", "c1"), Some(member("c1", "alice")));
        assert_eq!(p.counts("room"), (2, 2), "alice is still there by c2");
        assert_eq!(
            p.leave("room", "c2").map(|m| m.user),
            Some(Arc::from("alice"))
        );
        assert_eq!(p.counts("room"), (1, 1));
        assert_eq!(p.leave("room", "c2"), None, "left already");
        let (members, conns, users) = p.members("room");
        assert_eq!((members, conns, users), (vec![member("c3", "bob")], 1, 1));
        p.leave("room", "c3");
        assert_eq!(
            p.stats.topics.load(Ordering::Relaxed),
            0,
            "an empty topic is dropped"
        );
        assert_eq!(p.stats.members.load(Ordering::Relaxed), 0);
        assert_eq!(p.stats.joins.load(Ordering::Relaxed), 3);
        assert_eq!(p.stats.leaves.load(Ordering::Relaxed), 3);
    }
}
