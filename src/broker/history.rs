//! History across nodes: offsets and epochs assigned in Redis, so that every node agrees on them.
//!
//! Per topic with history, Redis holds a hash `ringws:hm:TOPIC` (`epoch`, `top`: the last offset given)
//! and a stream `ringws:hs:TOPIC` (one entry per publication: `o` its offset, `m` its envelope), both
//! expiring `--history-ttl` after the topic's last publication. A publish is one script
//! ([`PUBLISH_SCRIPT`], `EVALSHA`) that takes the next offset, appends to the stream (trimmed to about
//! `--history-size`), and publishes the envelope prefixed with its position ([`encode_positioned`]) on the
//! topic's channel: atomic in Redis, so offsets are the order every node receives. A new epoch is made by
//! the node whose publish finds no hash (the first one, or after the topic expired). A node's own
//! publications come back to it like everyone else's: in offset order, through its `History` mirror
//! (`channels::History::insert`), which hands them to the workers.
//!
//! A subscriber that needs what this node never received (its gap started before the node listened to the
//! topic, or the position of a topic the node just joined) is answered by a fetch ([`FETCH_SCRIPT`]: the
//! epoch, the newest offset and the stream's entries after an offset), on a connection of its own per
//! Redis, off the workers: the answer reaches the asking worker through its inbox ([`Fetched`]).
//!
//! Must never block a worker, never trust what Redis returns (a reply of the wrong shape fails the fetch,
//! never panics), and never hold more than one history's worth per answer.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use redis_protocol::resp2::types::{BorrowedFrame, RangeFrame};

use super::envelope;
use super::link::{Conn, LinkContext, LinkError};
use crate::channels::{Epoch, Position};
use crate::reactor::ring::DoorbellRing;
use crate::reactor::{Op, UserData, NO_CONNECTION};
use crate::server::inbox::{Fetched, FetchedPage, Sent, WorkerMessage};
use crate::server::{ConnId, SharedMessage};

/// The publish script. KEYS: the topic's hash and stream. ARGV: the channel, the envelope, the stream's
/// length (about), the keys' time to live in milliseconds, an epoch for a new hash.
pub const PUBLISH_SCRIPT: &str = "\
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'top', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'o', offset, 'm', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[1], 'h' .. epoch .. ':' .. offset .. ':' .. ARGV[2])
return offset
";

/// The fetch script. KEYS: the topic's hash and stream. ARGV: the offset after which entries are wanted,
/// the most entries (0: only the position), the most bytes of envelopes. Returns `{epoch, top, offset,
/// envelope, offset, envelope, ...}`: the newest entries after the offset that fit both bounds, oldest
/// first (so a gap too big to send whole comes back without its oldest part, and is not recovered); or
/// `{'', 0}` when the topic has no history.
pub const FETCH_SCRIPT: &str = "\
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'', 0} end
local top = tonumber(redis.call('HGET', KEYS[1], 'top') or '0')
local after = tonumber(ARGV[1])
local most = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local out = {epoch, top}
if most > 0 and after < top then
  local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', math.min(top - after, most))
  local keep, bytes = 0, 0
  for i = 1, #entries do
    local fields = entries[i][2]
    local o = tonumber(fields[2])
    if not o or o <= after then break end
    bytes = bytes + #fields[4]
    if bytes > limit then break end
    keep = i
  end
  for i = keep, 1, -1 do
    local fields = entries[i][2]
    out[#out + 1] = fields[2]
    out[#out + 1] = fields[4]
  end
end
return out
";

/// The hash of `topic`'s history on Redis.
pub fn meta_key(topic: &str) -> String {
    format!("ringws:hm:{topic}")
}

/// The stream of `topic`'s history on Redis.
pub fn stream_key(topic: &str) -> String {
    format!("ringws:hs:{topic}")
}

/// What the publish script puts before an envelope: `h`, the epoch, `:`, the offset in decimal, `:`.
/// Splits a positioned message into its position and its envelope; `None` if it is not one.
pub fn decode_positioned(bytes: &[u8]) -> Option<(Position, &[u8])> {
    let rest = bytes.strip_prefix(b"h")?;
    let epoch = Epoch::parse(std::str::from_utf8(rest.get(..8)?).ok()?)?;
    let rest = rest.get(8..)?.strip_prefix(b":")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let digits = &rest[..colon];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let offset: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    if offset == 0 {
        return None;
    }
    Some((Position { offset, epoch }, &rest[colon + 1..]))
}

/// The same prefix, as the script writes it.
#[cfg(test)]
pub fn encode_positioned(out: &mut Vec<u8>, position: Position, envelope: &[u8]) {
    out.push(b'h');
    out.extend_from_slice(position.epoch.as_str().as_bytes());
    out.push(b':');
    out.extend_from_slice(position.offset.to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(envelope);
}

/// A worker's question for Redis: the position of `topic` and its publications after `after` (`None`:
/// the position only).
pub(crate) struct FetchRequest {
    pub(crate) worker: usize,
    pub(crate) conn: ConnId,
    pub(crate) topic: Arc<str>,
    pub(crate) after: Option<u64>,
    /// The asker's own tag, echoed in the answer.
    pub(crate) tag: u64,
    /// A presence query (`broker::presence::QUERY_SCRIPT`) rather than a history fetch.
    pub(crate) presence: bool,
    /// Answer it as failed without asking (its link went down before its channel was confirmed).
    pub(crate) fail: bool,
}

/// The most fetches one link's queue holds; past it a fetch fails at once (the worker answers
/// `recovered: false`).
pub const FETCH_QUEUE: usize = 1024;

/// A fetch connection's thread: answers the workers' fetches in order, one `EVALSHA` each (pipelined per
/// batch), and hands each answer to the asking worker's inbox. While Redis cannot be reached every fetch
/// fails at once: a worker never waits on a link that is down.
pub(super) fn run_fetcher(link: LinkContext, requests: Receiver<FetchRequest>) {
    let mut sha: Option<(String, String)> = None;
    let mut conn: Option<Conn> = None;
    let mut doorbell: Option<DoorbellRing> = None;
    let most = link
        .shared
        .config
        .history
        .map_or(0, |h| h.size.saturating_add(1));
    // A worker sends no more than half a connection's queue cap in one answer: no more is fetched.
    let bytes = link.shared.config.max_backpressure / 2;
    loop {
        if link.stopping() {
            return;
        }
        let first = match requests.recv_timeout(Duration::from_millis(50)) {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < 256 {
            match requests.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            conn = open(&link, &mut sha).ok();
        }
        let (failed, batch): (Vec<FetchRequest>, Vec<FetchRequest>) =
            batch.into_iter().partition(|r| r.fail);
        let answers = match (conn.as_mut(), sha.as_ref()) {
            _ if batch.is_empty() => Ok(Vec::new()),
            (Some(c), Some(shas)) => fetch_batch(c, shas, &batch, (most, bytes)),
            _ => Err(LinkError::Io(std::io::ErrorKind::NotConnected.into())),
        };
        let answers = match answers {
            Ok(answers) => answers,
            Err(_) => {
                // Answered as failed; the next batch reconnects.
                conn = None;
                batch.iter().map(|_| Err(())).collect()
            }
        };
        let errors = answers.iter().filter(|a| a.is_err()).count() + failed.len();
        link.status
            .history_fetches
            .fetch_add((answers.len() + failed.len()) as u64, Ordering::Relaxed);
        link.status
            .history_fetch_failures
            .fetch_add(errors as u64, Ordering::Relaxed);
        let mut ring = vec![false; link.shared.inboxes.len()];
        let failed = failed.into_iter().map(|r| (r, Err(())));
        for (request, result) in batch.into_iter().zip(answers).chain(failed) {
            let worker = request.worker;
            let fetched = Fetched {
                conn: request.conn,
                topic: request.topic,
                tag: request.tag,
                result,
            };
            match link
                .shared
                .inboxes
                .send(worker, WorkerMessage::Fetched(Box::new(fetched)))
            {
                Sent::Queued => ring[worker] = true,
                Sent::Full => {
                    // The worker gives up on its own after a while (`recovered: false`).
                    link.shared.metrics[worker].handoff_drops.inc();
                    ring[worker] = true;
                }
                Sent::Gone => {}
            }
        }
        for (worker, rung) in ring.into_iter().enumerate() {
            if !rung || !link.shared.inboxes.claim_doorbell(worker) {
                continue;
            }
            if doorbell.is_none() {
                doorbell = DoorbellRing::new().ok();
            }
            if let (Some(ring), Some(fd)) = (doorbell.as_mut(), link.shared.inboxes.ring_fd(worker))
            {
                // A lost doorbell is covered by the worker's tick, which drains its inbox.
                let _ = ring.ring(
                    fd,
                    0,
                    UserData::new(NO_CONNECTION, 0, Op::Doorbell).encode(),
                );
            }
        }
    }
}

/// Connects and loads the fetch and presence query scripts.
fn open(link: &LinkContext, sha: &mut Option<(String, String)>) -> Result<Conn, LinkError> {
    let mut conn = Conn::open(&link.url, true)?;
    let fetch = load_script(&mut conn, FETCH_SCRIPT)?;
    let query = load_script(&mut conn, super::presence::QUERY_SCRIPT)?;
    *sha = Some((fetch, query));
    Ok(conn)
}

/// `SCRIPT LOAD`: the script's SHA1 as Redis names it.
pub(super) fn load_script(conn: &mut Conn, script: &str) -> Result<String, LinkError> {
    conn.command(&[b"SCRIPT", b"LOAD", script.as_bytes()]);
    conn.flush()?;
    match conn.reply()? {
        (RangeFrame::BulkString(range), start) => {
            Ok(String::from_utf8_lossy(conn.bytes(start, &range)).into_owned())
        }
        (RangeFrame::Error(range), start) => Err(LinkError::Refused(format!(
            "SCRIPT LOAD: {}",
            String::from_utf8_lossy(conn.bytes(start, &range))
        ))),
        _ => Err(LinkError::Garbage(
            "SCRIPT LOAD answered with another shape".into(),
        )),
    }
}

/// Sends every fetch of `batch`, then reads the answers in order.
fn fetch_batch(
    conn: &mut Conn,
    (sha, query): &(String, String),
    batch: &[FetchRequest],
    (most, bytes): (usize, usize),
) -> Result<Vec<Result<FetchedPage, ()>>, LinkError> {
    let bytes = bytes.to_string();
    for request in batch {
        if request.presence {
            let nodes = super::presence::nodes_key(&request.topic);
            let prefix = super::presence::members_prefix(&request.topic);
            conn.command_frames(&[
                BorrowedFrame::BulkString(b"EVALSHA"),
                BorrowedFrame::BulkString(query.as_bytes()),
                BorrowedFrame::BulkString(b"1"),
                BorrowedFrame::BulkString(nodes.as_bytes()),
                BorrowedFrame::BulkString(prefix.as_bytes()),
            ]);
            continue;
        }
        let (meta, stream) = (meta_key(&request.topic), stream_key(&request.topic));
        let after = request.after.unwrap_or(0).to_string();
        let most = if request.after.is_some() { most } else { 0 }.to_string();
        conn.command_frames(&[
            BorrowedFrame::BulkString(b"EVALSHA"),
            BorrowedFrame::BulkString(sha.as_bytes()),
            BorrowedFrame::BulkString(b"2"),
            BorrowedFrame::BulkString(meta.as_bytes()),
            BorrowedFrame::BulkString(stream.as_bytes()),
            BorrowedFrame::BulkString(after.as_bytes()),
            BorrowedFrame::BulkString(most.as_bytes()),
            BorrowedFrame::BulkString(bytes.as_bytes()),
        ]);
    }
    conn.flush()?;
    let mut answers = Vec::with_capacity(batch.len());
    for request in batch {
        let (frame, start) = conn.reply()?;
        answers.push(if request.presence {
            members(conn, &frame, start)
        } else {
            page(conn, &frame, start)
        });
    }
    Ok(answers)
}

/// A presence query's answer: every member's JSON.
fn members(conn: &Conn, frame: &RangeFrame, start: usize) -> Result<FetchedPage, ()> {
    let RangeFrame::Array(items) = frame else {
        return Err(());
    };
    let mut members = Vec::with_capacity(items.len());
    for item in items {
        let RangeFrame::BulkString(range) = item else {
            return Err(());
        };
        let text = std::str::from_utf8(conn.bytes(start, range)).map_err(|_| ())?;
        members.push(Box::from(text));
    }
    Ok(FetchedPage {
        position: None,
        entries: Vec::new(),
        members,
    })
}

/// One fetch's answer, decoded; `Err` for any shape but the script's.
fn page(conn: &Conn, frame: &RangeFrame, start: usize) -> Result<FetchedPage, ()> {
    let RangeFrame::Array(items) = frame else {
        return Err(());
    };
    let bulk = |item: &RangeFrame| match item {
        RangeFrame::BulkString(range) => Some(conn.bytes(start, range)),
        _ => None,
    };
    let (Some(epoch), Some(RangeFrame::Integer(top))) =
        (items.first().and_then(bulk), items.get(1))
    else {
        return Err(());
    };
    if epoch.is_empty() {
        return Ok(FetchedPage {
            position: None,
            entries: Vec::new(),
            members: Vec::new(),
        });
    }
    let epoch = Epoch::parse(std::str::from_utf8(epoch).map_err(|_| ())?).ok_or(())?;
    let top = u64::try_from(*top).map_err(|_| ())?;
    let mut entries = Vec::with_capacity(items.len().saturating_sub(2) / 2);
    for pair in items[2..].chunks(2) {
        let [offset, message] = pair else {
            return Err(());
        };
        let offset: u64 = std::str::from_utf8(bulk(offset).ok_or(())?)
            .map_err(|_| ())?
            .parse()
            .map_err(|_| ())?;
        let inner = envelope::decode(bulk(message).ok_or(())?).map_err(|_| ())?;
        let message = SharedMessage::encode(inner.kind, inner.payload)
            .with_position(Position { offset, epoch });
        entries.push((offset, message));
    }
    Ok(FetchedPage {
        position: Some(Position { offset: top, epoch }),
        entries,
        members: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positioned_messages_read_back_and_anything_else_is_refused() {
        let position = Position {
            offset: 1234,
            epoch: Epoch::parse("00ff00ff").unwrap(),
        };
        let mut out = Vec::new();
        encode_positioned(&mut out, position, b"rest:with:colons");
        assert_eq!(out, b"h00ff00ff:1234:rest:with:colons");
        assert_eq!(
            decode_positioned(&out),
            Some((position, &b"rest:with:colons"[..]))
        );
        for bad in [
            &b""[..],
            b"h",
            b"r00ff00ff:1:x",
            b"h00ff00f:1:x",
            b"h00FF00ff:1:x",
            b"h00ff00ff:0:x",
            b"h00ff00ff::x",
            b"h00ff00ff:12x:x",
            b"h00ff00ff:12",
            b"h00ff00ff:99999999999999999999:x",
        ] {
            assert_eq!(
                decode_positioned(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
