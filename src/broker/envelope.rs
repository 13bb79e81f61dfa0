//! What a message looks like on Redis: the channel it goes to and the small binary envelope around its
//! payload, the per-channel sequences a publisher stamps and the gaps a receiver counts, and which Redis a
//! channel belongs to. Sans-I/O: no socket, no clock, no thread.
//!
//! Envelope: `[b'r'][1][kind: 1 text, 2 binary][node id: u64 BE][sequence: u64 BE][payload]`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::MessageKind;

/// Every channel this server uses starts with it.
pub const CHANNEL_PREFIX: &str = "ringws:";

/// The channel of broadcasts (`#` is never in a topic, so no topic can take it).
pub const BROADCAST_CHANNEL: &str = "ringws:#broadcast";

/// Bytes of the envelope before the payload.
pub const HEADER_LEN: usize = 19;

const MAGIC: u8 = b'r';
const VERSION: u8 = 1;

/// The channel of `topic` (`None`: broadcast).
pub fn channel(topic: Option<&str>) -> String {
    match topic {
        Some(topic) => format!("{CHANNEL_PREFIX}{topic}"),
        None => BROADCAST_CHANNEL.to_string(),
    }
}

/// The topic a channel carries: `Some(None)` for broadcast, `None` for a channel that is not ours.
pub fn topic_of(channel: &[u8]) -> Option<Option<&str>> {
    if channel == BROADCAST_CHANNEL.as_bytes() {
        return Some(None);
    }
    let topic = channel.strip_prefix(CHANNEL_PREFIX.as_bytes())?;
    let topic = std::str::from_utf8(topic).ok()?;
    crate::topics::valid_topic(topic).then_some(Some(topic))
}

/// One received envelope, borrowing its payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub kind: MessageKind,
    pub node: u64,
    pub sequence: u64,
    pub payload: &'a [u8],
}

/// Why a message on one of our channels was not an envelope (counted, dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnEnvelope;

/// Appends the envelope of `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, kind: MessageKind, node: u64, sequence: u64, payload: &[u8]) {
    out.push(MAGIC);
    out.push(VERSION);
    out.push(match kind {
        MessageKind::Text => 1,
        MessageKind::Binary => 2,
    });
    out.extend_from_slice(&node.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(payload);
}

pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, NotAnEnvelope> {
    if bytes.len() < HEADER_LEN || bytes[0] != MAGIC || bytes[1] != VERSION {
        return Err(NotAnEnvelope);
    }
    let kind = match bytes[2] {
        1 => MessageKind::Text,
        2 => MessageKind::Binary,
        _ => return Err(NotAnEnvelope),
    };
    let node = u64::from_be_bytes(bytes[3..11].try_into().map_err(|_| NotAnEnvelope)?);
    let sequence = u64::from_be_bytes(bytes[11..19].try_into().map_err(|_| NotAnEnvelope)?);
    let payload = &bytes[HEADER_LEN..];
    if kind == MessageKind::Text && simdutf8::basic::from_utf8(payload).is_err() {
        return Err(NotAnEnvelope);
    }
    Ok(Envelope {
        kind,
        node,
        sequence,
        payload,
    })
}

/// A publisher's next sequence per channel, by topic (`None`: broadcast); the first is 1.
#[derive(Default)]
pub struct Sequences(HashMap<Option<Arc<str>>, u64>);

/// The most channels a [`Sequences`] or a [`Gaps`] tracks; past it, it starts over (a sender's sequences
/// restart at 1, which receivers take for a restarted sender, not for a gap; a receiver starting over
/// misses at most the gaps of the next message per channel). Bounds the memory that publishing on ever
/// new topics could take.
pub const MAX_TRACKED: usize = 100_000;

impl Sequences {
    pub fn next(&mut self, topic: &Option<Arc<str>>) -> u64 {
        if let Some(last) = self.0.get_mut(topic) {
            *last += 1;
            return *last;
        }
        if self.0.len() >= MAX_TRACKED {
            self.0.clear();
        }
        self.0.insert(topic.clone(), 1);
        1
    }
}

/// A receiver's last sequence per channel and node: counts the messages it never saw.
#[derive(Default)]
pub struct Gaps(HashMap<Box<[u8]>, HashMap<u64, u64>>);

impl Gaps {
    /// `sequence` from `node` arrived on `channel`: returns how many were missed before it (0 for the
    /// first seen, or for one older than the last: Redis never reorders, so that is a restarted sender).
    pub fn received(&mut self, node: u64, channel: &[u8], sequence: u64) -> u64 {
        if !self.0.contains_key(channel) && self.0.len() >= MAX_TRACKED {
            self.0.clear();
        }
        let nodes = match self.0.get_mut(channel) {
            Some(nodes) => nodes,
            None => self.0.entry(channel.into()).or_default(),
        };
        match nodes.insert(node, sequence) {
            Some(last) => sequence.saturating_sub(last + 1),
            None => 0,
        }
    }

    /// The node left `channel`: what it sees after joining again starts a new count.
    pub fn forget(&mut self, channel: &[u8]) {
        self.0.remove(channel);
    }
}

/// Which of `links` (their `HOST:PORT`) carries `topic`'s channel (`None`: broadcast): rendezvous hashing
/// (the highest hash of link and channel), the same on every node; adding a link moves only the
/// channels it wins.
pub fn link_of(links: &[String], topic: Option<&str>) -> usize {
    if links.len() <= 1 {
        return 0;
    }
    let channel: [&[u8]; 2] = match topic {
        Some(topic) => [CHANNEL_PREFIX.as_bytes(), topic.as_bytes()],
        None => [BROADCAST_CHANNEL.as_bytes(), b""],
    };
    (0..links.len())
        .max_by_key(|&i| fnv1a(&[links[i].as_bytes(), b"\0", channel[0], channel[1]]))
        .unwrap_or(0)
}

/// 64-bit FNV-1a over `parts` in order, finished with MurmurHash3's `fmix64` so that the last bytes
/// reach the high bits the comparison reads (stable across builds and platforms, unlike std's hasher).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_and_garbage_is_refused() {
        let mut out = Vec::new();
        encode(&mut out, MessageKind::Binary, 7, 42, b"\xffpayload");
        let envelope = decode(&out).unwrap();
        assert_eq!(
            envelope,
            Envelope {
                kind: MessageKind::Binary,
                node: 7,
                sequence: 42,
                payload: b"\xffpayload"
            }
        );
        assert_eq!(decode(&out[..HEADER_LEN - 1]), Err(NotAnEnvelope));
        let mut text = Vec::new();
        encode(&mut text, MessageKind::Text, 1, 1, b"\xff");
        assert_eq!(decode(&text), Err(NotAnEnvelope), "text must be UTF-8");
        assert_eq!(decode(b"hello world, not ours!"), Err(NotAnEnvelope));
    }

    #[test]
    fn channels_name_topics_and_broadcast() {
        assert_eq!(channel(Some("a/b")), "ringws:a/b");
        assert_eq!(topic_of(b"ringws:a/b"), Some(Some("a/b")));
        assert_eq!(topic_of(BROADCAST_CHANNEL.as_bytes()), Some(None));
        assert_eq!(topic_of(b"other:a"), None);
        assert_eq!(topic_of(b"ringws:"), None);
    }

    #[test]
    fn gaps_are_counted_per_node_and_channel() {
        let mut sequences = Sequences::default();
        let (a, b) = (Some(Arc::from("a")), Some(Arc::from("b")));
        assert_eq!(
            [
                sequences.next(&a),
                sequences.next(&a),
                sequences.next(&b),
                sequences.next(&None)
            ],
            [1, 2, 1, 1]
        );
        let mut gaps = Gaps::default();
        assert_eq!(
            gaps.received(1, b"a", 5),
            0,
            "the first seen sets the start"
        );
        assert_eq!(gaps.received(1, b"a", 6), 0);
        assert_eq!(gaps.received(1, b"a", 9), 2);
        assert_eq!(gaps.received(2, b"a", 1), 0, "another node counts apart");
        assert_eq!(gaps.received(1, b"b", 3), 0, "another channel counts apart");
        gaps.forget(b"a");
        assert_eq!(gaps.received(1, b"a", 20), 0, "left and joined again");
        assert_eq!(gaps.received(1, b"a", 1), 0, "a restarted sender");
    }

    #[test]
    fn tracking_starts_over_past_its_bound() {
        let mut sequences = Sequences::default();
        let kept = Some(Arc::from("kept"));
        assert_eq!(sequences.next(&kept), 1);
        assert_eq!(sequences.next(&kept), 2);
        for i in 1..MAX_TRACKED {
            sequences.next(&Some(Arc::from(i.to_string())));
        }
        assert_eq!(sequences.0.len(), MAX_TRACKED);
        sequences.next(&Some(Arc::from("one more")));
        assert_eq!(sequences.0.len(), 1);
        assert_eq!(sequences.next(&kept), 1, "starts over");
        // ...which a receiver takes for a restarted sender, not a gap.
        let mut gaps = Gaps::default();
        assert_eq!(gaps.received(9, b"ringws:kept", 2), 0);
        assert_eq!(gaps.received(9, b"ringws:kept", 1), 0);
        assert_eq!(gaps.received(9, b"ringws:kept", 2), 0);
    }

    #[test]
    fn channels_spread_over_links_the_same_way_everywhere() {
        let links: Vec<String> = ["a:1", "b:2", "c:3"].map(String::from).to_vec();
        let spread: Vec<usize> = (0..300)
            .map(|i| link_of(&links, Some(&format!("t{i}"))))
            .collect();
        for link in 0..3 {
            let n = spread.iter().filter(|&&l| l == link).count();
            assert!((60..=140).contains(&n), "link {link}: {n} of 300");
        }
        // A fourth link takes only channels it wins; the others stay where they were.
        let mut more = links.clone();
        more.push("d:4".into());
        for (i, &before) in spread.iter().enumerate() {
            let after = link_of(&more, Some(&format!("t{i}")));
            assert!(after == before || after == 3);
        }
        assert_eq!(link_of(&links[..1], Some("x")), 0);
        assert!(link_of(&links, None) < 3);
    }
}
