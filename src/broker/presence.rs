//! Presence across nodes: each node's members of each topic in Redis, with a time to live each node keeps
//! refreshing, so that a node that dies without a word drops out within `--presence-ttl`.
//!
//! Per topic, Redis holds one hash per node, `ringws:pm:TOPIC:NODE` (client id -> the member's JSON), and a
//! sorted set `ringws:pn:TOPIC` (node -> the time its hash stops counting, in Redis's clock), both expiring
//! `--presence-ttl` after the node's last refresh. A join or a leave is one script on the node's publisher
//! connection ([`JOIN_SCRIPT`], [`LEAVE_SCRIPT`]: the hash changed and the event published on the topic's
//! channel, `p` + the node's id + the event, [`encode_event`]); every `ttl / 3` the publisher refreshes the
//! hashes and scores of the topics where the node has members ([`REFRESH_SCRIPT`]), and after a reconnect it
//! writes all of them again (Redis may have restarted empty). A query ([`QUERY_SCRIPT`], on the fetch
//! connection) drops the nodes whose time has passed and returns every member of the others.
//!
//! Events reach the other nodes' watchers through their subscriber threads; a node's own events are
//! delivered locally when they happen and skipped when they come back. Members of a node that died leave
//! queries within the TTL, without leave events. Must never block a worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::BorrowedFrame;

use super::link::{Conn, LinkError};

/// A join: KEYS the node's hash of the topic and the topic's node set; ARGV client, member JSON, TTL in
/// milliseconds, node, channel, event.
pub const JOIN_SCRIPT: &str = "\
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

/// A leave: the same keys and arguments as a join.
pub const LEAVE_SCRIPT: &str = "\
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

/// A refresh of one topic: KEYS as a join; ARGV TTL in milliseconds, node.
pub const REFRESH_SCRIPT: &str = "\
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
";

/// A query: KEYS the topic's node set; ARGV the prefix of its nodes' hashes. Returns every member's JSON of
/// the nodes whose time has not passed (those whose time has are dropped from the set).
pub const QUERY_SCRIPT: &str = "\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  for _, member in ipairs(redis.call('HVALS', ARGV[1] .. node)) do
    out[#out + 1] = member
  end
end
return out
";

/// The node set of `topic`.
pub fn nodes_key(topic: &str) -> String {
    format!("ringws:pn:{topic}")
}

/// The prefix of `topic`'s per-node hashes (the node's id follows).
pub fn members_prefix(topic: &str) -> String {
    format!("ringws:pm:{topic}:")
}

/// A node's id as it appears in keys and events: 16 hex digits.
pub fn node_name(node: u64) -> String {
    format!("{node:016x}")
}

/// A presence event as it travels on a topic's channel: `p`, the node, `:`, the event's JSON text.
pub fn encode_event(out: &mut Vec<u8>, node: u64, event: &[u8]) {
    out.push(b'p');
    out.extend_from_slice(node_name(node).as_bytes());
    out.push(b':');
    out.extend_from_slice(event);
}

/// The node and the event's text of a presence event; `None` if it is not one.
pub fn decode_event(bytes: &[u8]) -> Option<(u64, &str)> {
    let rest = bytes.strip_prefix(b"p")?;
    let node = std::str::from_utf8(rest.get(..16)?).ok()?;
    let node = u64::from_str_radix(node, 16).ok()?;
    let event = rest.get(16..)?.strip_prefix(b":")?;
    Some((node, std::str::from_utf8(event).ok()?))
}

/// A join or a leave on its way to Redis.
#[derive(Debug, Clone)]
pub(crate) enum PresenceOp {
    Join { client: Arc<str>, member: Arc<str> },
    Leave { client: Arc<str> },
}

/// What the publisher keeps of this node's presence, across reconnects: every member per topic (written
/// again after a reconnect) and when it last refreshed.
pub(super) struct PresenceMembers {
    node: String,
    ttl: String,
    refresh_every: Duration,
    topics: HashMap<Arc<str>, HashMap<Arc<str>, Arc<str>>>,
    refreshed: Instant,
}

/// The presence scripts as one connection knows them.
pub(super) struct PresenceScripts {
    join: String,
    leave: String,
    refresh: String,
}

impl PresenceScripts {
    pub(super) fn load(conn: &mut Conn) -> Result<PresenceScripts, LinkError> {
        Ok(PresenceScripts {
            join: super::history::load_script(conn, JOIN_SCRIPT)?,
            leave: super::history::load_script(conn, LEAVE_SCRIPT)?,
            refresh: super::history::load_script(conn, REFRESH_SCRIPT)?,
        })
    }
}

impl PresenceMembers {
    pub(super) fn new(node: u64, ttl: Duration) -> PresenceMembers {
        PresenceMembers {
            node: node_name(node),
            ttl: ttl.as_millis().max(1).to_string(),
            refresh_every: ttl / 3,
            topics: HashMap::new(),
            refreshed: Instant::now(),
        }
    }

    /// Writes one join or leave (the script, with the event to publish), and remembers the member.
    /// Returns the commands written (one).
    pub(super) fn write(
        &mut self,
        conn: &mut Conn,
        scripts: &PresenceScripts,
        topic: &Arc<str>,
        op: &PresenceOp,
        channel: &[u8],
        event: &[u8],
    ) -> usize {
        let (sha, client, member) = match op {
            PresenceOp::Join { client, member } => {
                self.topics
                    .entry(Arc::clone(topic))
                    .or_default()
                    .insert(Arc::clone(client), Arc::clone(member));
                (&scripts.join, client, &**member)
            }
            PresenceOp::Leave { client } => {
                if let Some(members) = self.topics.get_mut(topic) {
                    members.remove(client);
                    if members.is_empty() {
                        self.topics.remove(topic);
                    }
                }
                (&scripts.leave, client, "")
            }
        };
        let hash = format!("{}{}", members_prefix(topic), self.node);
        let nodes = nodes_key(topic);
        conn.command_frames(&[
            BorrowedFrame::BulkString(b"EVALSHA"),
            BorrowedFrame::BulkString(sha.as_bytes()),
            BorrowedFrame::BulkString(b"2"),
            BorrowedFrame::BulkString(hash.as_bytes()),
            BorrowedFrame::BulkString(nodes.as_bytes()),
            BorrowedFrame::BulkString(client.as_bytes()),
            BorrowedFrame::BulkString(member.as_bytes()),
            BorrowedFrame::BulkString(self.ttl.as_bytes()),
            BorrowedFrame::BulkString(self.node.as_bytes()),
            BorrowedFrame::BulkString(channel),
            BorrowedFrame::BulkString(event),
        ]);
        1
    }

    /// Every `ttl / 3` (or at once with `now_anyway`): refreshes every topic where this node has members.
    /// Returns the commands written.
    pub(super) fn refresh(
        &mut self,
        conn: &mut Conn,
        scripts: &PresenceScripts,
        now_anyway: bool,
    ) -> usize {
        if !now_anyway && self.refreshed.elapsed() < self.refresh_every {
            return 0;
        }
        self.refreshed = Instant::now();
        for topic in self.topics.keys() {
            let hash = format!("{}{}", members_prefix(topic), self.node);
            let nodes = nodes_key(topic);
            conn.command_frames(&[
                BorrowedFrame::BulkString(b"EVALSHA"),
                BorrowedFrame::BulkString(scripts.refresh.as_bytes()),
                BorrowedFrame::BulkString(b"2"),
                BorrowedFrame::BulkString(hash.as_bytes()),
                BorrowedFrame::BulkString(nodes.as_bytes()),
                BorrowedFrame::BulkString(self.ttl.as_bytes()),
                BorrowedFrame::BulkString(self.node.as_bytes()),
            ]);
        }
        self.topics.len()
    }

    /// After a (re)connect: every member written again (Redis may have lost them), then a refresh.
    /// Returns the commands written.
    pub(super) fn write_all(&mut self, conn: &mut Conn, scripts: &PresenceScripts) -> usize {
        let mut written = 0;
        for (topic, members) in &self.topics {
            let hash = format!("{}{}", members_prefix(topic), self.node);
            let mut args: Vec<BorrowedFrame<'_>> = vec![
                BorrowedFrame::BulkString(b"HSET"),
                BorrowedFrame::BulkString(hash.as_bytes()),
            ];
            for (client, member) in members {
                args.push(BorrowedFrame::BulkString(client.as_bytes()));
                args.push(BorrowedFrame::BulkString(member.as_bytes()));
            }
            conn.command_frames(&args);
            written += 1;
        }
        written + self.refresh(conn, scripts, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_node_and_anything_else_is_refused() {
        let mut out = Vec::new();
        encode_event(&mut out, 0xabc, br#"{"join":{}}"#);
        assert_eq!(decode_event(&out), Some((0xabc, r#"{"join":{}}"#)));
        for bad in [
            &b""[..],
            b"p",
            b"p0000000000000abc",
            b"x0000000000000abc:{}",
            b"p000000000000zabc:{}",
        ] {
            assert_eq!(
                decode_event(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
