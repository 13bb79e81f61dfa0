//! One Redis: a subscriber thread on the pub/sub connection and a publisher thread on another, each a
//! blocking `std::net::TcpStream` with its own read buffer and the `redis-protocol` RESP codec.
//!
//! Owns reconnecting (backoff with jitter, one log line per state change), the batched
//! SUBSCRIBE/UNSUBSCRIBE of the node's channels on this Redis, the PUBLISH of what the workers queued
//! (pipelined: batches are written while earlier ones wait for their replies, a bounded number in
//! flight), and the handoff of received messages to the workers (one `SharedMessage` per message, an
//! inbox entry and at most one doorbell per worker per read). Must never block a worker, never panic on
//! what Redis sends (a reply it cannot decode resets the link), and never hold unbounded memory: the
//! publish queue is bounded, so are the commands in flight, and interest changes are the transitions of
//! the workers' topic tables.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, RangeFrame};

use super::envelope::{self, Gaps, Sequences};
use super::history::FetchRequest;
use super::{BrokerStatus, Interest, Outgoing, RedisUrl};
use crate::protocol::deflate::{Compressors, DeflateMode};
use crate::protocol::MessageKind;
use crate::reactor::ring::DoorbellRing;
use crate::reactor::{Op, UserData, NO_CONNECTION};
use crate::server::inbox::{Sent, WorkerMessage};
use crate::server::{Shared, SharedMessage};

/// How long a subscriber waits for Redis before it looks at interest changes and the shutdown flag (the
/// most a new subscription waits before its SUBSCRIBE is sent).
const POLL: Duration = Duration::from_millis(10);
/// The most PUBLISH commands written in one write.
const PUBLISH_BATCH: usize = 1024;
/// The most PUBLISH commands written and not yet answered: the publisher writes new batches while the
/// replies to earlier ones are on their way, so the link never idles waiting for Redis. Their replies
/// (about 4 bytes each) fit in the socket's receive buffer.
const MAX_IN_FLIGHT: usize = 8 * PUBLISH_BATCH;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A reply Redis does not send within this is a broken link.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The largest reply kept while incomplete (a published message is at most `--max-message-size`).
const MAX_BUFFERED: usize = 512 << 20;
/// The read buffer's first size and growth step.
const READ_CHUNK: usize = 64 << 10;

/// Why a connection to Redis ended.
#[derive(Debug)]
pub(super) enum LinkError {
    Io(io::Error),
    /// Bytes that are not RESP, or a reply of the wrong shape.
    Garbage(String),
    /// An error reply to AUTH, SELECT or SUBSCRIBE.
    Refused(String),
    /// The server is shutting down.
    Stopped,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Io(e) => write!(f, "{e}"),
            LinkError::Garbage(what) => write!(f, "reply not understood: {what}"),
            LinkError::Refused(what) => write!(f, "refused: {what}"),
            LinkError::Stopped => f.write_str("stopped"),
        }
    }
}

impl From<io::Error> for LinkError {
    fn from(e: io::Error) -> Self {
        LinkError::Io(e)
    }
}

/// A connection with its read buffer.
pub(super) struct Conn {
    stream: TcpStream,
    /// Read buffer, initialized once over its whole length (it grows only for a reply longer than it):
    /// a read goes straight into its spare tail, never zeroing 64 KiB for a short read.
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded.
    pos: usize,
    /// Bytes of `buf` read so far (`pos..end` waits to be decoded).
    end: usize,
    out: Vec<u8>,
}

impl Conn {
    pub(super) fn open(url: &RedisUrl, select_db: bool) -> Result<Conn, LinkError> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for addr in url.addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or(LinkError::Io(last))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        // A Redis that stops reading breaks the link instead of holding a write forever.
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let mut conn = Conn {
            stream,
            buf: vec![0; READ_CHUNK],
            pos: 0,
            end: 0,
            out: Vec::with_capacity(64 << 10),
        };
        if let Some((user, password)) = &url.auth {
            match user {
                Some(user) => conn.command(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => conn.command(&[b"AUTH", password.as_bytes()]),
            }
            conn.flush()?;
            conn.expect_ok("AUTH")?;
        }
        if select_db && url.db != 0 {
            let db = url.db.to_string();
            conn.command(&[b"SELECT", db.as_bytes()]);
            conn.flush()?;
            conn.expect_ok("SELECT")?;
        }
        Ok(conn)
    }

    /// Appends one command (an array of bulk strings) to the output.
    pub(super) fn command(&mut self, args: &[&[u8]]) {
        let parts: Vec<BorrowedFrame<'_>> =
            args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
        self.command_frames(&parts);
    }

    pub(super) fn command_frames(&mut self, parts: &[BorrowedFrame<'_>]) {
        let frame = BorrowedFrame::Array(parts);
        let start = self.out.len();
        self.out.resize(start + frame.encode_len(false), 0);
        // The buffer was sized by the codec's own length: encoding cannot run short.
        let written = encode_borrowed(&mut self.out[start..], &frame, false).unwrap_or(0);
        self.out.truncate(start + written);
    }

    /// Appends `PUBLISH channel envelope` to the output, the envelope (`envelope::encode`) written in
    /// place: the payload is copied once, straight into the output. Written here rather than through the
    /// codec's encoder, which takes each argument as one slice (the envelope would be assembled apart and
    /// copied again) and sizes lengths with a floating-point `log10`: on the publisher's path, per message.
    /// `channel` is the concatenation of its parts.
    fn publish(
        &mut self,
        channel: [&[u8]; 2],
        kind: MessageKind,
        node: u64,
        sequence: u64,
        payload: &[u8],
    ) {
        let out = &mut self.out;
        out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
        bulk_header(out, channel[0].len() + channel[1].len());
        out.extend_from_slice(channel[0]);
        out.extend_from_slice(channel[1]);
        out.extend_from_slice(b"\r\n");
        bulk_header(out, envelope::HEADER_LEN + payload.len());
        envelope::encode(out, kind, node, sequence, payload);
        out.extend_from_slice(b"\r\n");
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        let result = self.stream.write_all(&self.out);
        self.out.clear();
        result
    }

    /// The next complete frame already in the buffer, without reading (its ranges index
    /// `self.buf[start..]`, `start` returned beside it).
    fn buffered_frame(&mut self) -> Result<Option<(RangeFrame, usize)>, LinkError> {
        if self.pos == self.end {
            return Ok(None);
        }
        match decode_range(&self.buf[self.pos..self.end]) {
            Ok(Some((frame, used))) => {
                let start = self.pos;
                self.pos += used;
                Ok(Some((frame, start)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(LinkError::Garbage(e.to_string())),
        }
    }

    /// One read into the buffer (decoded bytes dropped first); `Ok(false)` when the read timed out.
    fn fill(&mut self) -> Result<bool, LinkError> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            if self.buf.len() > 16 * READ_CHUNK {
                // Grown for a long reply once: give it back.
                self.buf = vec![0; READ_CHUNK];
            }
        } else if self.pos > self.buf.len() / 2 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end - self.pos > MAX_BUFFERED {
            return Err(LinkError::Garbage("reply over 512 MiB".into()));
        }
        if self.buf.len() - self.end < READ_CHUNK / 4 {
            // A reply longer than the buffer: grow it (zeroed once, kept for the connection).
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        let read = self.stream.read(&mut self.buf[self.end..]);
        match read {
            Ok(0) => Err(LinkError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e) => {
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    return Ok(false);
                }
                Err(e.into())
            }
        }
    }

    /// The next frame, waiting for it (a timeout is an error).
    pub(super) fn reply(&mut self) -> Result<(RangeFrame, usize), LinkError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(frame);
            }
            if !self.fill()? {
                return Err(LinkError::Io(io::ErrorKind::TimedOut.into()));
            }
        }
    }

    pub(super) fn bytes(&self, start: usize, range: &(usize, usize)) -> &[u8] {
        self.buf
            .get(start + range.0..start + range.1)
            .unwrap_or_default()
    }

    fn expect_ok(&mut self, what: &str) -> Result<(), LinkError> {
        match self.reply()? {
            (RangeFrame::SimpleString(_), _) => Ok(()),
            (RangeFrame::Error(range), start) => Err(LinkError::Refused(format!(
                "{what}: {}",
                String::from_utf8_lossy(self.bytes(start, &range))
            ))),
            (other, _) => Err(LinkError::Garbage(format!("{what}: {}", shape(&other)))),
        }
    }
}

/// A RESP bulk string's header, `$LEN\r\n`.
fn bulk_header(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = len;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.push(b'$');
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// A reply's RESP type, for error messages.
fn shape(frame: &RangeFrame) -> &'static str {
    match frame {
        RangeFrame::SimpleString(_) => "a simple string",
        RangeFrame::Error(_) => "an error",
        RangeFrame::Integer(_) => "an integer",
        RangeFrame::BulkString(_) => "a bulk string",
        RangeFrame::Array(_) => "an array",
        RangeFrame::Null => "null",
    }
}

/// The state of one connection as logged: one line per change.
struct LinkLog {
    role: &'static str,
    addr: String,
    up: Option<bool>,
    attempt: u32,
}

impl LinkLog {
    fn up(&mut self) {
        if self.up != Some(true) {
            tracing::info!(redis = %self.addr, "broker {} connection up", self.role);
        }
        self.up = Some(true);
        self.attempt = 0;
    }

    fn down(&mut self, error: &LinkError) {
        if self.up != Some(false) {
            tracing::warn!(
                redis = %self.addr,
                "broker {} connection down: {error}; retrying with backoff",
                self.role
            );
        }
        self.up = Some(false);
    }

    /// The wait before the next attempt: 100 ms doubling up to 5 s, +-25% jitter.
    fn backoff(&mut self) -> Duration {
        let base = BACKOFF_FIRST
            .saturating_mul(1 << self.attempt.min(6))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = random() % 501; // 0..=500 thousandths
        base.mul_f64(0.75 + jitter as f64 / 1000.0)
    }
}

/// A random number from the standard library's per-process random hasher keys.
pub(super) fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Everything one link's threads share.
pub(super) struct LinkContext {
    pub(super) index: usize,
    pub(super) url: RedisUrl,
    pub(super) node: u64,
    /// Whether this link carries the broadcast channel.
    pub(super) broadcast: bool,
    pub(super) status: Arc<BrokerStatus>,
    pub(super) shared: Arc<Shared>,
}

impl LinkContext {
    pub(super) fn stopping(&self) -> bool {
        self.shared.shutdown.load(Ordering::Acquire)
    }

    /// Sleeps `wait` in slices, returning early (with `Stopped`) at shutdown; `each` runs between slices.
    fn sleep(&self, wait: Duration, mut each: impl FnMut()) -> Result<(), LinkError> {
        let until = Instant::now() + wait;
        loop {
            each();
            if self.stopping() {
                return Err(LinkError::Stopped);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }
}

/// The pub/sub connection's thread: keeps the node's channels on this Redis subscribed and hands what
/// arrives to the workers.
/// The history fetches of one link, as its subscriber thread sees them: asked by the workers, passed on
/// to the fetch thread once their channel's subscription is confirmed (`super::history`).
pub(super) struct Fetches {
    pub(super) asked: Receiver<FetchRequest>,
    pub(super) to_fetcher: SyncSender<FetchRequest>,
}

pub(super) fn run_subscriber(link: LinkContext, interests: Receiver<Interest>, fetches: Fetches) {
    let mut subscriber = Subscriber {
        fetches,
        pending_fetches: Vec::new(),
        confirmed: HashSet::new(),
        wanted: HashMap::new(),
        subscribed: HashSet::new(),
        gaps: Gaps::default(),
        doorbell: None,
        ring: vec![false; link.shared.inboxes.len()],
        interests,
        changed: true,
        compressors: (link.shared.config.compression.mode != DeflateMode::Off)
            .then(|| Compressors::new(link.shared.config.compression.level)),
    };
    let mut log = LinkLog {
        role: "subscriber",
        addr: link.url.addr.clone(),
        up: None,
        attempt: 0,
    };
    let status = &link.status.links[link.index].subscriber_up;
    loop {
        subscriber.take_interests();
        let error = match Conn::open(&link.url, false) {
            Ok(mut conn) => match subscriber.serve(&link, &mut conn, &mut log) {
                Err(LinkError::Stopped) => return,
                Err(e) => {
                    // A connection made and then lost or given up (a reply not understood).
                    link.status.resets.fetch_add(1, Ordering::Relaxed);
                    e
                }
                Ok(()) => return,
            },
            Err(e) => e,
        };
        status.store(false, Ordering::Release);
        subscriber.subscribed.clear();
        subscriber.confirmed.clear();
        subscriber.changed = true;
        // Fetches cannot wait for a link that is down: answered as failed.
        subscriber.take_fetches();
        for mut request in subscriber.pending_fetches.drain(..) {
            request.fail = true;
            let _ = subscriber.fetches.to_fetcher.try_send(request);
        }
        if let Some(history) = &link.shared.history {
            // Publications of the outage never reach this node by pub/sub: its mirror is not current.
            history.unsync_all();
        }
        log.down(&error);
        let wait = log.backoff();
        if link.sleep(wait, || subscriber.take_interests()).is_err() {
            return;
        }
    }
}

struct Subscriber {
    fetches: Fetches,
    /// Fetches waiting for their channel's subscription to be confirmed: a fetch answered before the
    /// node listens could miss what is published between the two.
    pending_fetches: Vec<FetchRequest>,
    /// Channels whose SUBSCRIBE Redis confirmed on the current connection.
    confirmed: HashSet<String>,
    /// Channels the node wants from this Redis: how many workers want each.
    wanted: HashMap<String, u32>,
    /// Channels subscribed on the current connection.
    subscribed: HashSet<String>,
    gaps: Gaps,
    doorbell: Option<DoorbellRing>,
    /// Workers whose inbox got a message since the last doorbells.
    ring: Vec<bool>,
    interests: Receiver<Interest>,
    /// `wanted` changed since the last sync, or the connection is new.
    changed: bool,
    /// With permessage-deflate on: what frames a message from Redis compressed too, once for the node.
    compressors: Option<Compressors>,
}

impl Subscriber {
    /// Takes the fetches the workers asked for: passed on at once when their channel is confirmed or not
    /// wanted, else kept until it is confirmed.
    fn take_fetches(&mut self) {
        // A worker tells its interest in a topic before it asks for the topic's fetch: taken first, so
        // that a fetch seen here has its interest counted.
        self.take_interests();
        while let Ok(request) = self.fetches.asked.try_recv() {
            let channel = envelope::channel(Some(&request.topic));
            // A topic the node does not subscribe to (a history query) has no subscription to wait for.
            if self.confirmed.contains(&channel) || !self.wanted.contains_key(&channel) {
                self.pass_fetch(request);
            } else {
                self.pending_fetches.push(request);
            }
        }
    }

    fn pass_fetch(&mut self, request: FetchRequest) {
        // A full fetch queue loses the request: the worker's hold times out (`recovered: false`).
        let _ = self.fetches.to_fetcher.try_send(request);
    }

    /// Redis confirmed the subscription to `channel`: its waiting fetches go on.
    fn confirmed(&mut self, channel: &[u8]) {
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        self.confirmed.insert(channel.to_string());
        let (ready, waiting): (Vec<FetchRequest>, Vec<FetchRequest>) =
            std::mem::take(&mut self.pending_fetches)
                .into_iter()
                .partition(|r| envelope::channel(Some(&r.topic)) == channel);
        self.pending_fetches = waiting;
        for request in ready {
            self.pass_fetch(request);
        }
    }

    fn take_interests(&mut self) {
        loop {
            match self.interests.try_recv() {
                Ok(Interest { channel, wanted }) => {
                    self.changed = true;
                    if wanted {
                        *self.wanted.entry(channel).or_insert(0) += 1;
                    } else if let Some(count) = self.wanted.get_mut(&channel) {
                        *count -= 1;
                        if *count == 0 {
                            self.wanted.remove(&channel);
                        }
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    /// Sends one SUBSCRIBE for every wanted channel not subscribed and one UNSUBSCRIBE for every
    /// subscribed channel no longer wanted.
    fn sync_subscriptions(&mut self, link: &LinkContext, conn: &mut Conn) -> io::Result<()> {
        if !std::mem::take(&mut self.changed) {
            return Ok(());
        }
        let wants = |subscriber: &Subscriber, channel: &str| {
            subscriber.wanted.contains_key(channel)
                || (link.broadcast && channel == envelope::BROADCAST_CHANNEL)
        };
        let mut join: Vec<String> = self
            .wanted
            .keys()
            .filter(|c| !self.subscribed.contains(*c))
            .cloned()
            .collect();
        if link.broadcast && !self.subscribed.contains(envelope::BROADCAST_CHANNEL) {
            join.push(envelope::BROADCAST_CHANNEL.to_string());
        }
        let leave: Vec<String> = self
            .subscribed
            .iter()
            .filter(|c| !wants(self, c))
            .cloned()
            .collect();
        if !join.is_empty() {
            let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            args.extend(join.iter().map(|c| c.as_bytes()));
            conn.command(&args);
        }
        if !leave.is_empty() {
            let mut args: Vec<&[u8]> = vec![b"UNSUBSCRIBE"];
            args.extend(leave.iter().map(|c| c.as_bytes()));
            conn.command(&args);
        }
        if join.is_empty() && leave.is_empty() {
            return Ok(());
        }
        conn.flush()?;
        for channel in leave {
            self.gaps.forget(channel.as_bytes());
            self.subscribed.remove(&channel);
        }
        self.subscribed.extend(join);
        Ok(())
    }

    fn serve(
        &mut self,
        link: &LinkContext,
        conn: &mut Conn,
        log: &mut LinkLog,
    ) -> Result<(), LinkError> {
        self.sync_subscriptions(link, conn)?;
        // The connection answers PING in pub/sub mode: one round trip proves the link before it is up.
        conn.command(&[b"PING"]);
        conn.flush()?;
        conn.stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        loop {
            let (frame, start) = conn.reply()?;
            if self.handle(link, conn, frame, start)? {
                break;
            }
        }
        link.status.links[link.index]
            .subscriber_up
            .store(true, Ordering::Release);
        log.up();
        conn.stream.set_read_timeout(Some(POLL))?;
        let mut heard = Instant::now();
        let mut pinged = false;
        loop {
            // Everything already received first, then one doorbell per worker for all of it.
            while let Some((frame, start)) = conn.buffered_frame()? {
                self.handle(link, conn, frame, start)?;
            }
            self.ring_doorbells(link);
            self.take_interests();
            self.sync_subscriptions(link, conn)?;
            self.take_fetches();
            if link.stopping() {
                return Err(LinkError::Stopped);
            }
            if conn.fill()? {
                heard = Instant::now();
                pinged = false;
            } else if heard.elapsed() > REPLY_TIMEOUT {
                // Quiet for a while: a PING must be answered within the reply timeout, so that a link
                // Redis dropped without a FIN is found within seconds.
                if pinged {
                    return Err(LinkError::Io(io::ErrorKind::TimedOut.into()));
                }
                conn.command(&[b"PING"]);
                conn.flush()?;
                heard = Instant::now();
                pinged = true;
            }
        }
    }

    /// One frame from the pub/sub connection; returns whether it was the answer to a PING.
    fn handle(
        &mut self,
        link: &LinkContext,
        conn: &Conn,
        frame: RangeFrame,
        start: usize,
    ) -> Result<bool, LinkError> {
        let RangeFrame::Array(parts) = frame else {
            return match frame {
                RangeFrame::SimpleString(range) if conn.bytes(start, &range) == b"PONG" => Ok(true),
                RangeFrame::Error(range) => Err(LinkError::Refused(
                    String::from_utf8_lossy(conn.bytes(start, &range)).into_owned(),
                )),
                other => Err(LinkError::Garbage(format!(
                    "{} on the pub/sub connection",
                    shape(&other)
                ))),
            };
        };
        let bulk = |i: usize| match parts.get(i) {
            Some(RangeFrame::BulkString(range)) => Some(conn.bytes(start, range)),
            _ => None,
        };
        match bulk(0) {
            Some(b"message") => {
                let (Some(channel), Some(payload)) = (bulk(1), bulk(2)) else {
                    return Err(LinkError::Garbage(
                        "message without channel or payload".into(),
                    ));
                };
                self.deliver(link, channel, payload);
                Ok(false)
            }
            Some(b"subscribe") => {
                if let Some(channel) = bulk(1) {
                    self.confirmed(channel);
                }
                Ok(false)
            }
            Some(b"unsubscribe") => {
                if let Some(channel) = bulk(1).and_then(|c| std::str::from_utf8(c).ok()) {
                    self.confirmed.remove(channel);
                }
                Ok(false)
            }
            Some(b"pong") => Ok(true),
            _ => Err(LinkError::Garbage(
                "unknown push on the pub/sub connection".into(),
            )),
        }
    }

    /// A message from Redis: encoded once, handed to every worker.
    fn deliver(&mut self, link: &LinkContext, channel: &[u8], payload: &[u8]) {
        let Some(topic) = envelope::topic_of(channel) else {
            return;
        };
        if let (Some(topic), Some((node, event))) = (topic, super::presence::decode_event(payload))
        {
            // Another node's join or leave, for this node's watchers (this node's own were delivered
            // when they happened).
            if node != link.node {
                let message =
                    SharedMessage::encode(MessageKind::Text, event.as_bytes()).into_event();
                let topic: Arc<str> = Arc::from(topic);
                hand_to_workers(&link.shared, &mut self.ring, || WorkerMessage::Publish {
                    topic: Arc::clone(&topic),
                    message: message.clone(),
                });
            }
            return;
        }
        if let (Some(topic), Some((position, inner))) =
            (topic, super::history::decode_positioned(payload))
        {
            return self.deliver_positioned(link, channel, topic, position, inner);
        }
        let Ok(envelope) = envelope::decode(payload) else {
            link.status.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if envelope.node == link.node {
            // Our own publish, delivered locally when it was made.
            return;
        }
        self.count_received(link, channel, &envelope);
        let message = self.encode(link, envelope.kind, envelope.payload);
        let topic: Option<Arc<str>> = topic.map(Arc::from);
        hand_to_workers(&link.shared, &mut self.ring, || match &topic {
            Some(topic) => WorkerMessage::Publish {
                topic: Arc::clone(topic),
                message: message.clone(),
            },
            None => WorkerMessage::Broadcast {
                message: message.clone(),
                except: None,
            },
        });
    }

    /// Counts a message received and the messages of its sender missed before it on its channel.
    fn count_received(
        &mut self,
        link: &LinkContext,
        channel: &[u8],
        envelope: &envelope::Envelope<'_>,
    ) {
        let lost = self
            .gaps
            .received(envelope.node, channel, envelope.sequence);
        if lost > 0 {
            link.status.messages_lost.fetch_add(lost, Ordering::Relaxed);
        }
        link.status.received.fetch_add(1, Ordering::Relaxed);
    }

    /// A publication with its offset (`broker::history`), this node's own too: into the node's history
    /// mirror, which hands it to every worker in offset order.
    fn deliver_positioned(
        &mut self,
        link: &LinkContext,
        channel: &[u8],
        topic: &str,
        position: crate::channels::Position,
        inner: &[u8],
    ) {
        let Ok(envelope) = envelope::decode(inner) else {
            link.status.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(history) = link.shared.history.clone() else {
            return;
        };
        self.count_received(link, channel, &envelope);
        let message = self.encode(link, envelope.kind, envelope.payload);
        let topic: Arc<str> = Arc::from(topic);
        let ring = &mut self.ring;
        let inserted = history.insert(
            &topic,
            position,
            message.with_position(position),
            Instant::now(),
            |message| {
                hand_to_workers(&link.shared, ring, || WorkerMessage::Publish {
                    topic: Arc::clone(&topic),
                    message: message.clone(),
                })
            },
        );
        if let crate::channels::history::Inserted::AfterGap(_) = inserted {
            link.status.history_gaps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames a message from Redis once for every local subscriber, as a local publish is framed
    /// (`Core::encode_shared`): with permessage-deflate on and the message at or above the threshold, also
    /// compressed once, so subscribers that agreed get it compressed whichever node published it.
    fn encode(&mut self, link: &LinkContext, kind: MessageKind, payload: &[u8]) -> SharedMessage {
        let deflate = &link.shared.config.compression;
        match self.compressors.as_mut() {
            Some(compressors) if payload.len() >= deflate.threshold => {
                let message = SharedMessage::encode_compressed(
                    kind,
                    payload,
                    compressors,
                    deflate.max_window_bits,
                );
                if message.compressed_frame().is_some() {
                    link.status.compressed.fetch_add(1, Ordering::Relaxed);
                }
                message
            }
            _ => SharedMessage::encode(kind, payload),
        }
    }

    /// One doorbell per worker that got messages, unless its last one is still unanswered.
    fn ring_doorbells(&mut self, link: &LinkContext) {
        let inboxes = &link.shared.inboxes;
        for worker in 0..self.ring.len() {
            if !std::mem::take(&mut self.ring[worker]) || !inboxes.claim_doorbell(worker) {
                continue;
            }
            if self.doorbell.is_none() {
                self.doorbell = DoorbellRing::new().ok();
            }
            if let (Some(ring), Some(fd)) = (self.doorbell.as_mut(), inboxes.ring_fd(worker)) {
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

/// Puts one message (made by `make`) in every worker's inbox and marks in `ring` the doorbells to ring; a
/// worker whose inbox is full loses it (counted in its `handoff_drops`).
fn hand_to_workers(shared: &Shared, ring: &mut [bool], mut make: impl FnMut() -> WorkerMessage) {
    for (worker, rung) in ring.iter_mut().enumerate() {
        match shared.inboxes.send(worker, make()) {
            Sent::Queued => *rung = true,
            Sent::Full => {
                shared.metrics[worker].handoff_drops.inc();
                *rung = true;
            }
            Sent::Gone => {}
        }
    }
}

/// The publishing connection's thread: PUBLISH what the workers queued, pipelined across batches. While
/// the link is down the queue is not read: it is the bounded buffer, and publishes that do not fit are
/// dropped and counted by the worker that made them.
pub(super) fn run_publisher(link: LinkContext, publishes: Receiver<Outgoing>) {
    let mut log = LinkLog {
        role: "publisher",
        addr: link.url.addr.clone(),
        up: None,
        attempt: 0,
    };
    let mut sequences = Sequences::default();
    let mut batch: Vec<Outgoing> = Vec::with_capacity(PUBLISH_BATCH);
    let status = &link.status.links[link.index].publisher_up;
    let publishing = Publishing {
        node: link.node,
        index: link.index,
        status: &link.status,
        // Not the shutdown itself: the workers' last publishes and presence leaves are written first.
        shutdown: &link.shared.broker_stop,
    };
    let mut members =
        link.shared.config.presence.then(|| {
            super::presence::PresenceMembers::new(link.node, link.shared.config.presence_ttl)
        });
    loop {
        let error = match Conn::open(&link.url, true) {
            Ok(mut conn) => {
                // One round trip proves the link before it is up.
                let proved = ping(&mut conn).and_then(|()| {
                    // With history, publications go through the script that gives their offsets.
                    let script = match link.shared.config.history {
                        Some(_) => Some(super::history::load_script(
                            &mut conn,
                            super::history::PUBLISH_SCRIPT,
                        )?),
                        None => None,
                    };
                    // With presence, this node's members are written again (Redis may have lost
                    // them) before anything else.
                    let presence = match members.as_mut() {
                        Some(members) => {
                            let scripts = super::presence::PresenceScripts::load(&mut conn)?;
                            let written = members.write_all(&mut conn, &scripts);
                            conn.flush()?;
                            expect_integers(&mut conn, written)?;
                            Some(scripts)
                        }
                        None => None,
                    };
                    status.store(true, Ordering::Release);
                    log.up();
                    let scripts = Scripts {
                        history: script.map(|sha| HistoryScript::new(&link, sha)),
                        presence,
                    };
                    publishing.until_broken(
                        &mut conn,
                        &publishes,
                        &mut sequences,
                        &mut batch,
                        &scripts,
                        members.as_mut(),
                    )
                });
                match proved {
                    Err(LinkError::Stopped) | Ok(()) => return,
                    Err(e) => {
                        link.status.resets.fetch_add(1, Ordering::Relaxed);
                        e
                    }
                }
            }
            Err(e) => e,
        };
        status.store(false, Ordering::Release);
        log.down(&error);
        let wait = log.backoff();
        if link.sleep(wait, || {}).is_err() {
            return;
        }
    }
}

/// Reads `n` replies, each an integer (a script's or HSET's).
fn expect_integers(conn: &mut Conn, n: usize) -> Result<(), LinkError> {
    for _ in 0..n {
        match conn.reply()? {
            (RangeFrame::Integer(_), _) => {}
            (RangeFrame::Error(range), start) => {
                return Err(LinkError::Refused(
                    String::from_utf8_lossy(conn.bytes(start, &range)).into_owned(),
                ))
            }
            (other, _) => {
                return Err(LinkError::Garbage(format!(
                    "{} for an integer",
                    shape(&other)
                )))
            }
        }
    }
    Ok(())
}

/// The scripts a publisher connection loaded (with history, with presence).
#[derive(Default)]
struct Scripts {
    history: Option<HistoryScript>,
    presence: Option<super::presence::PresenceScripts>,
}

fn ping(conn: &mut Conn) -> Result<(), LinkError> {
    conn.command(&[b"PING"]);
    conn.flush()?;
    conn.expect_ok("PING")
}

/// The publish script of a connection (with history, `broker::history::PUBLISH_SCRIPT`): its SHA1 on this
/// Redis, and its fixed arguments.
struct HistoryScript {
    sha: String,
    size: String,
    ttl: String,
}

impl HistoryScript {
    fn new(link: &LinkContext, sha: String) -> HistoryScript {
        let (size, ttl) = link
            .shared
            .config
            .history
            .map_or((0, 1), |h| (h.size, h.ttl.as_millis().max(1)));
        HistoryScript {
            sha,
            size: size.to_string(),
            ttl: ttl.to_string(),
        }
    }
}

/// What the publishing loop needs of its link (no server: a test drives it with a peer of its own).
struct Publishing<'a> {
    node: u64,
    index: usize,
    status: &'a BrokerStatus,
    shutdown: &'a AtomicBool,
}

impl Publishing<'_> {
    /// PUBLISH what is queued until the connection breaks, pipelined: batches of up to [`PUBLISH_BATCH`]
    /// are written while earlier ones still wait for their replies, up to [`MAX_IN_FLIGHT`] commands
    /// unanswered. Replies are read only when that many are out or the queue is drained (one read takes
    /// every reply that arrived), and matched in order: each must be PUBLISH's integer, and a reply to no
    /// command, an error or another shape breaks the link. Commands in flight when it breaks are lost
    /// (their sequence numbers show as gaps on the receivers, as for the publishes dropped while it is
    /// down).
    fn until_broken(
        &self,
        conn: &mut Conn,
        publishes: &Receiver<Outgoing>,
        sequences: &mut Sequences,
        batch: &mut Vec<Outgoing>,
        scripts: &Scripts,
        mut members: Option<&mut super::presence::PresenceMembers>,
    ) -> Result<(), LinkError> {
        let mut in_flight = 0;
        loop {
            if let (Some(members), Some(presence)) = (members.as_deref_mut(), &scripts.presence) {
                // Every third of the presence TTL: this node's members are still here.
                let written = members.refresh(conn, presence, false);
                if written > 0 {
                    in_flight += written;
                    conn.flush()?;
                }
            }
            if in_flight == 0 && batch.is_empty() {
                if self.shutdown.load(Ordering::Acquire) {
                    // Stopping: what is still queued is written first; then done.
                    match publishes.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => return Err(LinkError::Stopped),
                    }
                } else {
                    // Nothing to read: wait for the workers.
                    match publishes.recv_timeout(Duration::from_millis(50)) {
                        Ok(first) => batch.push(first),
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return Ok(()),
                    }
                }
            }
            let room = PUBLISH_BATCH.min(MAX_IN_FLIGHT - in_flight);
            while batch.len() < room {
                match publishes.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let drained = batch.len() < room;
            if !batch.is_empty() {
                in_flight += batch.len();
                in_flight -=
                    self.write_batch(conn, sequences, batch, scripts, members.as_deref_mut())?;
            }
            // Replies are waited for when the queue is drained (nothing else to do) or when a full batch
            // would not fit; meanwhile they collect in the socket, read many at a time.
            if in_flight > 0 && (drained || in_flight + PUBLISH_BATCH > MAX_IN_FLIGHT) {
                self.take_replies(conn, &mut in_flight)?;
            }
        }
    }

    /// Encodes every publish of `batch` as a PUBLISH (channel, envelope) into the connection's output and
    /// writes it in one write.
    fn write_batch(
        &self,
        conn: &mut Conn,
        sequences: &mut Sequences,
        batch: &mut Vec<Outgoing>,
        scripts: &Scripts,
        mut members: Option<&mut super::presence::PresenceMembers>,
    ) -> Result<usize, LinkError> {
        let mut bytes = 0;
        let mut in_batch_skipped = 0;
        for outgoing in batch.iter() {
            let channel: [&[u8]; 2] = match &outgoing.topic {
                Some(topic) => [envelope::CHANNEL_PREFIX.as_bytes(), topic.as_bytes()],
                None => [envelope::BROADCAST_CHANNEL.as_bytes(), b""],
            };
            let message = &outgoing.message;
            bytes += message.payload().len();
            if let Some(op) = &outgoing.presence {
                // A join or leave: its script (no sequence: not a publication).
                if let (Some(topic), Some(members), Some(presence)) =
                    (&outgoing.topic, members.as_deref_mut(), &scripts.presence)
                {
                    let channel = [channel[0], channel[1]].concat();
                    let mut event = Vec::with_capacity(20 + message.payload().len());
                    super::presence::encode_event(&mut event, self.node, message.payload());
                    members.write(conn, presence, topic, op, &channel, &event);
                } else {
                    // Not written: no reply will come for it.
                    in_batch_skipped += 1;
                }
                continue;
            }
            let sequence = sequences.next(&outgoing.topic);
            match (&outgoing.topic, &scripts.history) {
                (Some(topic), Some(script)) if outgoing.history => {
                    // Through the script that gives the offset (`broker::history::PUBLISH_SCRIPT`).
                    let (meta, stream) = (
                        super::history::meta_key(topic),
                        super::history::stream_key(topic),
                    );
                    let channel = [channel[0], channel[1]].concat();
                    let mut body =
                        Vec::with_capacity(envelope::HEADER_LEN + message.payload().len());
                    envelope::encode(
                        &mut body,
                        message.kind(),
                        self.node,
                        sequence,
                        message.payload(),
                    );
                    let epoch = format!("{:08x}", random() as u32);
                    conn.command_frames(&[
                        BorrowedFrame::BulkString(b"EVALSHA"),
                        BorrowedFrame::BulkString(script.sha.as_bytes()),
                        BorrowedFrame::BulkString(b"2"),
                        BorrowedFrame::BulkString(meta.as_bytes()),
                        BorrowedFrame::BulkString(stream.as_bytes()),
                        BorrowedFrame::BulkString(&channel),
                        BorrowedFrame::BulkString(&body),
                        BorrowedFrame::BulkString(script.size.as_bytes()),
                        BorrowedFrame::BulkString(script.ttl.as_bytes()),
                        BorrowedFrame::BulkString(epoch.as_bytes()),
                    ]);
                }
                _ => conn.publish(
                    channel,
                    message.kind(),
                    self.node,
                    sequence,
                    message.payload(),
                ),
            }
        }
        self.status.links[self.index]
            .queued_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
        batch.clear();
        conn.flush()?;
        Ok(in_batch_skipped)
    }

    /// Waits for the next read of replies (a reply timeout is an error) and takes every complete reply it
    /// holds, in order.
    fn take_replies(&self, conn: &mut Conn, in_flight: &mut usize) -> Result<(), LinkError> {
        if !conn.fill()? {
            return Err(LinkError::Io(io::ErrorKind::TimedOut.into()));
        }
        let mut answered = 0;
        let result = loop {
            let (frame, start) = match conn.buffered_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            if answered == *in_flight {
                break Err(LinkError::Garbage(format!(
                    "{} answering no command",
                    shape(&frame)
                )));
            }
            match frame {
                RangeFrame::Integer(_) => answered += 1,
                RangeFrame::Error(range) => {
                    break Err(LinkError::Refused(format!(
                        "PUBLISH: {}",
                        String::from_utf8_lossy(conn.bytes(start, &range))
                    )));
                }
                other => {
                    break Err(LinkError::Garbage(format!(
                        "PUBLISH answered with {}",
                        shape(&other)
                    )));
                }
            }
        };
        *in_flight -= answered;
        self.status
            .published
            .fetch_add(answered as u64, Ordering::Relaxed);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc::SyncSender;

    /// A peer that writes `replies` in pieces of `piece` bytes, pausing between them.
    fn peer(replies: Vec<u8>, piece: usize) -> (RedisUrl, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            for chunk in replies.chunks(piece) {
                stream.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            // Hold the connection until the reader is done.
            let _ = stream.read(&mut [0u8; 1]);
        });
        let url = RedisUrl {
            addr: addr.to_string(),
            auth: None,
            db: 0,
        };
        (url, thread)
    }

    #[test]
    fn replies_in_small_pieces_and_one_longer_than_the_buffer() {
        let long = vec![b'x'; 3 * READ_CHUNK + 7];
        let mut replies = Vec::new();
        for i in 0..200 {
            replies.extend_from_slice(format!(":{i}\r\n").as_bytes());
        }
        replies.extend_from_slice(format!("${}\r\n", long.len()).as_bytes());
        replies.extend_from_slice(&long);
        replies.extend_from_slice(b"\r\n+PONG\r\n");
        let (url, thread) = peer(replies, 1000);
        let mut conn = Conn::open(&url, false).unwrap();
        for i in 0..200 {
            let (frame, _) = conn.reply().unwrap();
            assert!(matches!(frame, RangeFrame::Integer(n) if n == i), "{i}");
        }
        let (frame, start) = conn.reply().unwrap();
        let RangeFrame::BulkString(range) = frame else {
            panic!("not a bulk string");
        };
        assert_eq!(conn.bytes(start, &range), long.as_slice());
        assert!(conn.buf.len() > long.len(), "grown for the long reply");
        let (frame, start) = conn.reply().unwrap();
        let RangeFrame::SimpleString(range) = frame else {
            panic!("not a simple string");
        };
        assert_eq!(conn.bytes(start, &range), b"PONG");
        assert_eq!(conn.pos, conn.end, "everything decoded");
        drop(conn);
        thread.join().unwrap();
    }

    #[test]
    fn a_publish_is_encoded_as_the_codec_encodes_it() {
        let (url, peer) = peer(Vec::new(), 1);
        let mut conn = Conn::open(&url, false).unwrap();
        for payload_len in [0, 1, 9, 10, 99, 100, 12_345] {
            let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
            for (channel, topic) in [
                ("ringws:room-7", Some("room-7")),
                ("ringws:#broadcast", None),
            ] {
                let parts: [&[u8]; 2] = match topic {
                    Some(topic) => [envelope::CHANNEL_PREFIX.as_bytes(), topic.as_bytes()],
                    None => [envelope::BROADCAST_CHANNEL.as_bytes(), b""],
                };
                conn.publish(parts, MessageKind::Binary, 7, 42, &payload);
                let written = std::mem::take(&mut conn.out);
                let mut body = Vec::new();
                envelope::encode(&mut body, MessageKind::Binary, 7, 42, &payload);
                conn.command(&[b"PUBLISH", channel.as_bytes(), &body]);
                assert_eq!(written, conn.out, "{payload_len} bytes on {channel}");
                conn.out.clear();
            }
        }
        drop(conn);
        peer.join().unwrap();
    }

    /// A PUBLISH as a peer received it: channel, sequence and payload.
    type Received = (Vec<u8>, u64, Vec<u8>);

    /// A Redis stand-in for the publisher: reads PUBLISH commands and answers them with what `answer`
    /// returns for the commands received so far (how many, and the bytes), until it has `total` or its
    /// reads time out. Returns each command's channel, sequence and payload, in the order received.
    fn publish_peer(
        total: usize,
        mut answer: impl FnMut(usize, usize) -> Vec<u8> + Send + 'static,
    ) -> (RedisUrl, std::thread::JoinHandle<Vec<Received>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let (mut buf, mut pos, mut got) = (Vec::new(), 0, Vec::new());
            let mut chunk = vec![0u8; 64 << 10];
            while got.len() < total {
                let Ok(n @ 1..) = stream.read(&mut chunk) else {
                    break;
                };
                buf.extend_from_slice(&chunk[..n]);
                let before = got.len();
                while let Ok(Some((RangeFrame::Array(parts), used))) = decode_range(&buf[pos..]) {
                    let bulk = |i: usize| match &parts[i] {
                        RangeFrame::BulkString((a, b)) => buf[pos + a..pos + b].to_vec(),
                        _ => panic!("not a bulk string"),
                    };
                    assert_eq!(bulk(0), b"PUBLISH");
                    let body = bulk(2);
                    let envelope = envelope::decode(&body).unwrap();
                    got.push((bulk(1), envelope.sequence, envelope.payload.to_vec()));
                    pos += used;
                }
                let reply = answer(before, got.len());
                if stream.write_all(&reply).is_err() {
                    break; // The publisher gave up on the link.
                }
            }
            // Hold the connection until the publisher is done.
            let _ = stream.read(&mut chunk);
            got
        });
        let url = RedisUrl {
            addr: addr.to_string(),
            auth: None,
            db: 0,
        };
        (url, thread)
    }

    /// Queues `count` publishes on topic `t` (payload: the index), as `Broker::publish` does; the sending
    /// end is returned too (the workers' side stays open, as in a running server).
    fn queued(status: &BrokerStatus, count: usize) -> (SyncSender<Outgoing>, Receiver<Outgoing>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(count);
        let topic: Arc<str> = Arc::from("t");
        for i in 0..count as u64 {
            let message = SharedMessage::encode(MessageKind::Binary, &i.to_be_bytes());
            status.links[0].queued_bytes.fetch_add(8, Ordering::Relaxed);
            tx.send(Outgoing {
                topic: Some(Arc::clone(&topic)),
                message,
                history: false,
                presence: None,
            })
            .unwrap();
        }
        (tx, rx)
    }

    /// Runs the publishing loop against `url` with `publishes`; stops it once `done` holds of the status
    /// (or after 10 s) and returns how it ended.
    fn publish_to(
        url: &RedisUrl,
        status: &BrokerStatus,
        publishes: Receiver<Outgoing>,
        done: impl Fn(&BrokerStatus) -> bool,
    ) -> Result<(), LinkError> {
        let shutdown = AtomicBool::new(false);
        let publishing = Publishing {
            node: 7,
            index: 0,
            status,
            shutdown: &shutdown,
        };
        let mut conn = Conn::open(url, false).unwrap();
        std::thread::scope(|scope| {
            let (publishing, conn) = (&publishing, &mut conn);
            let run = scope.spawn(move || {
                let mut batch = Vec::new();
                publishing.until_broken(
                    conn,
                    &publishes,
                    &mut Sequences::default(),
                    &mut batch,
                    &Scripts::default(),
                    None,
                )
            });
            let until = Instant::now() + Duration::from_secs(10);
            while !run.is_finished() && !done(status) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            shutdown.store(true, Ordering::Release);
            run.join().unwrap()
        })
    }

    #[test]
    fn publishes_are_pipelined_across_batches_and_keep_their_order() {
        // The peer answers nothing until more than two batches are unanswered: a publisher that waited for
        // each batch's replies before writing the next would never get there (and time out).
        let total = 4 * PUBLISH_BATCH + 100;
        let hold = 2 * PUBLISH_BATCH + 1;
        let mut answered = 0;
        let (url, peer) = publish_peer(total, move |_, got| {
            if got < hold {
                return Vec::new();
            }
            let reply = b":1\r\n".repeat(got - answered);
            answered = got;
            reply
        });
        let status = BrokerStatus::new(std::slice::from_ref(&url));
        let (_workers, publishes) = queued(&status, total);
        let ended = publish_to(&url, &status, publishes, |s| {
            s.published.load(Ordering::Relaxed) == total as u64
        });
        let got = peer.join().unwrap();
        assert_eq!(got.len(), total, "every publish reached the peer");
        for (i, (channel, sequence, payload)) in got.iter().enumerate() {
            assert_eq!(channel, b"ringws:t");
            assert_eq!(*sequence, i as u64 + 1, "sequence of publish {i}");
            assert_eq!(payload.as_slice(), (i as u64).to_be_bytes(), "order at {i}");
        }
        assert!(matches!(ended, Err(LinkError::Stopped)), "{ended:?}");
        assert_eq!(status.published.load(Ordering::Relaxed), total as u64);
        assert_eq!(status.links[0].queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_reply_of_the_wrong_shape_breaks_the_link_after_the_good_ones() {
        let (url, peer) = publish_peer(20, |from, to| {
            (from..to)
                .map(|i| if i == 9 { "+OK\r\n" } else { ":1\r\n" })
                .collect::<String>()
                .into_bytes()
        });
        let status = BrokerStatus::new(std::slice::from_ref(&url));
        let (_workers, publishes) = queued(&status, 20);
        let ended = publish_to(&url, &status, publishes, |_| false);
        assert!(
            matches!(&ended, Err(LinkError::Garbage(what)) if what == "PUBLISH answered with a simple string"),
            "{ended:?}"
        );
        assert_eq!(status.published.load(Ordering::Relaxed), 9);
        peer.join().unwrap();
    }

    #[test]
    fn a_reply_to_no_command_breaks_the_link() {
        // One reply more than the commands written: the replies no longer match the commands.
        let (url, peer) = publish_peer(20, |from, to| b":1\r\n".repeat(to - from + 1));
        let status = BrokerStatus::new(std::slice::from_ref(&url));
        let (_workers, publishes) = queued(&status, 20);
        let ended = publish_to(&url, &status, publishes, |_| false);
        assert!(
            matches!(&ended, Err(LinkError::Garbage(what)) if what == "an integer answering no command"),
            "{ended:?}"
        );
        peer.join().unwrap();
    }
}
