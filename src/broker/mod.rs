//! Several nodes as one: Redis pub/sub between ringws nodes (`--broker redis://...`, docs/CLUSTER.md).
//!
//! Owns the links to Redis (one per URL: a subscriber and a publisher thread, `link`), the envelope and
//! channel naming on Redis (`envelope`), the node's broker metrics and health ([`BrokerStatus`]), and
//! the two doors the workers use: `Broker::publish` (a bounded queue, never waited on: full means
//! dropped and counted) and `Broker::interest` (a topic's first and last subscriber in a worker).
//! Messages from Redis reach the workers through their inboxes and doorbells, encoded once per node.
//! Must never block a worker, never copy a message per worker or per subscriber, and never panic on what
//! Redis sends. Without `--broker` none of it exists.

mod envelope;
pub(crate) mod history;
mod link;
pub(crate) mod presence;
mod url;

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use url::{redacted, BrokerPassword, RedisUrl, RedisUrlError};

use crate::server::{Shared, SharedMessage};

/// Publishes one link holds for Redis while it is slow or down before new ones are dropped.
pub const PUBLISH_QUEUE: usize = 16 * 1024;

/// Payload bytes one link's queue holds at most (the frames are shared with local delivery, but the queue
/// keeps them alive): past it, publishes are dropped and counted as when the queue is full.
pub const PUBLISH_QUEUE_BYTES: usize = 64 << 20;

/// A publish for Redis: the message as encoded for local delivery (a reference, no copy) and its topic
/// (`None`: broadcast).
pub(crate) struct Outgoing {
    topic: Option<Arc<str>>,
    message: SharedMessage,
    /// Published through the history script (`--history-size`): Redis gives it its offset.
    history: bool,
    /// A presence join or leave (`--presence`): `message` is its event, published by the script.
    presence: Option<Box<presence::PresenceOp>>,
}

/// A worker's first subscriber of a channel arrived (`wanted`), or its last left.
pub(crate) struct Interest {
    channel: String,
    wanted: bool,
}

/// What one link's threads take at start: its URL and the receiving ends of its queues.
type LinkParts = (
    RedisUrl,
    Receiver<Outgoing>,
    Receiver<Interest>,
    Receiver<history::FetchRequest>,
);

/// The node's link to its Redis servers, as the workers see it (in `Shared`).
pub(crate) struct Broker {
    /// Each link's `HOST:PORT`, in `--broker` order (rendezvous hashing over them).
    addrs: Vec<String>,
    publishes: Vec<SyncSender<Outgoing>>,
    interests: Vec<Sender<Interest>>,
    fetches: Vec<SyncSender<history::FetchRequest>>,
    status: Arc<BrokerStatus>,
    /// The receiving ends, taken by [`Broker::start`].
    parts: Mutex<Vec<LinkParts>>,
    node: u64,
}

impl Broker {
    /// The links for `urls` (at least one), not yet started.
    pub(crate) fn new(urls: &[RedisUrl]) -> Broker {
        let mut publishes = Vec::new();
        let mut interests = Vec::new();
        let mut fetches = Vec::new();
        let mut parts = Vec::new();
        for url in urls {
            let (publish_tx, publish_rx) = mpsc::sync_channel(PUBLISH_QUEUE);
            let (interest_tx, interest_rx) = mpsc::channel();
            let (fetch_tx, fetch_rx) = mpsc::sync_channel(history::FETCH_QUEUE);
            publishes.push(publish_tx);
            interests.push(interest_tx);
            fetches.push(fetch_tx);
            parts.push((url.clone(), publish_rx, interest_rx, fetch_rx));
        }
        Broker {
            addrs: urls.iter().map(|u| u.addr.clone()).collect(),
            publishes,
            interests,
            fetches,
            status: Arc::new(BrokerStatus::new(urls)),
            parts: Mutex::new(parts),
            node: link::random(),
        }
    }

    /// The node's broker metrics and health.
    pub(crate) fn status(&self) -> &Arc<BrokerStatus> {
        &self.status
    }

    /// Starts every link's two threads (they stop at the server's shutdown).
    pub(crate) fn start(&self, shared: &Arc<Shared>) -> std::io::Result<Vec<JoinHandle<()>>> {
        let parts = std::mem::take(&mut *self.parts.lock().unwrap_or_else(|e| e.into_inner()));
        let broadcast_link = envelope::link_of(&self.addrs, None);
        let mut threads = Vec::new();
        // The fetch thread answers history fetches and presence queries.
        let history = shared.config.history.is_some() || shared.config.presence;
        for (index, (url, publishes, interests, fetches)) in parts.into_iter().enumerate() {
            let context = || link::LinkContext {
                index,
                url: url.clone(),
                node: self.node,
                broadcast: index == broadcast_link,
                status: Arc::clone(&self.status),
                shared: Arc::clone(shared),
            };
            let subscriber = context();
            // Fetches pass through the subscriber (which waits for their channel's subscription) to
            // the fetch thread.
            let (to_fetcher, fetcher_rx) = mpsc::sync_channel(history::FETCH_QUEUE);
            let fetch_route = link::Fetches {
                asked: fetches,
                to_fetcher,
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ringws-broker-sub-{index}"))
                    .spawn(move || link::run_subscriber(subscriber, interests, fetch_route))?,
            );
            let publisher = context();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ringws-broker-pub-{index}"))
                    .spawn(move || link::run_publisher(publisher, publishes))?,
            );
            if history {
                let fetcher = context();
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("ringws-broker-fetch-{index}"))
                        .spawn(move || history::run_fetcher(fetcher, fetcher_rx))?,
                );
            }
        }
        Ok(threads)
    }

    /// Hands a message published on this node to Redis, for the other nodes. Never waits: when the
    /// link's queue is full (Redis slow or down) it is dropped and counted.
    pub(crate) fn publish(&self, topic: Option<&Arc<str>>, message: &SharedMessage) {
        self.publish_as(topic, message, false, None);
    }

    /// This node's id on Redis (16 hex digits in keys and presence client ids).
    pub(crate) fn node(&self) -> u64 {
        self.node
    }

    /// Hands a presence join or leave on `topic` to Redis (`presence`): the node's members there, and
    /// `event` (its JSON text) for the other nodes' watchers. Dropped and counted as `publish` is.
    pub(crate) fn presence(&self, topic: &Arc<str>, op: presence::PresenceOp, event: &[u8]) {
        let message = SharedMessage::encode(crate::protocol::MessageKind::Text, event);
        self.publish_as(Some(topic), &message, false, Some(Box::new(op)));
    }

    /// Hands a publication on a topic with history to Redis, which gives it its offset and sends it to
    /// every node, this one included (`history::PUBLISH_SCRIPT`). Dropped and counted as `publish` is.
    pub(crate) fn publish_with_history(&self, topic: &Arc<str>, message: &SharedMessage) {
        self.publish_as(Some(topic), message, true, None);
    }

    /// Asks Redis (off the worker) for `topic`'s position and publications after `after`; the answer
    /// reaches `worker`'s inbox as a `WorkerMessage::Fetched`. `false`: not asked (the link's queue is
    /// full or the link has stopped), no answer will come.
    pub(crate) fn fetch(&self, request: history::FetchRequest) -> bool {
        let link = envelope::link_of(&self.addrs, Some(&request.topic));
        self.fetches[link].try_send(request).is_ok()
    }

    fn publish_as(
        &self,
        topic: Option<&Arc<str>>,
        message: &SharedMessage,
        history: bool,
        presence: Option<Box<presence::PresenceOp>>,
    ) {
        let link = envelope::link_of(&self.addrs, topic.map(|t| &**t));
        let len = message.payload().len();
        let queued = &self.status.links[link].queued_bytes;
        let fits = queued.fetch_add(len, Ordering::Relaxed) + len <= PUBLISH_QUEUE_BYTES;
        let outgoing = Outgoing {
            topic: topic.cloned(),
            message: message.clone(),
            history,
            presence,
        };
        if !fits
            || matches!(
                self.publishes[link].try_send(outgoing),
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
            )
        {
            queued.fetch_sub(len, Ordering::Relaxed);
            self.status
                .publishes_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A worker's first local subscriber of `topic` arrived (`wanted`) or its last left: the node
    /// subscribes on Redis while any worker wants it.
    pub(crate) fn interest(&self, topic: &str, wanted: bool) {
        let link = envelope::link_of(&self.addrs, Some(topic));
        let interest = Interest {
            channel: envelope::channel(Some(topic)),
            wanted,
        };
        // The link thread outlives the workers; a send fails only when it has stopped.
        let _ = self.interests[link].send(interest);
    }
}

/// One link's state, for `ringws_broker_up` and `/healthz`.
pub(crate) struct LinkStatus {
    addr: String,
    subscriber_up: AtomicBool,
    publisher_up: AtomicBool,
    /// Payload bytes in the link's publish queue (added by the workers, taken off by the publisher).
    queued_bytes: AtomicUsize,
}

/// The node's broker metrics (any thread adds, atomically: these are counted off the hot path or once
/// per message on a broker thread) and health.
pub struct BrokerStatus {
    links: Vec<LinkStatus>,
    published: AtomicU64,
    received: AtomicU64,
    publishes_dropped: AtomicU64,
    messages_lost: AtomicU64,
    resets: AtomicU64,
    /// Messages on our channels that were not our envelope (dropped).
    foreign: AtomicU64,
    /// Messages from Redis framed compressed too (once per node, for permessage-deflate subscribers).
    compressed: AtomicU64,
    /// History fetches answered (`history::run_fetcher`), and those that failed (Redis down, a reply not
    /// understood).
    pub(crate) history_fetches: AtomicU64,
    pub(crate) history_fetch_failures: AtomicU64,
    /// Publications with history that arrived after a gap in their topic's offsets (published while this
    /// node did not listen, or lost on the way).
    pub(crate) history_gaps: AtomicU64,
}

impl BrokerStatus {
    fn new(urls: &[RedisUrl]) -> BrokerStatus {
        BrokerStatus {
            links: urls
                .iter()
                .map(|url| LinkStatus {
                    addr: url.addr.clone(),
                    subscriber_up: AtomicBool::new(false),
                    publisher_up: AtomicBool::new(false),
                    queued_bytes: AtomicUsize::new(0),
                })
                .collect(),
            published: AtomicU64::new(0),
            received: AtomicU64::new(0),
            publishes_dropped: AtomicU64::new(0),
            messages_lost: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            compressed: AtomicU64::new(0),
            history_fetches: AtomicU64::new(0),
            history_fetch_failures: AtomicU64::new(0),
            history_gaps: AtomicU64::new(0),
        }
    }

    fn link_up(link: &LinkStatus) -> bool {
        link.subscriber_up.load(Ordering::Acquire) && link.publisher_up.load(Ordering::Acquire)
    }

    /// `/healthz`: the reason the node is not whole (a link down), or `None`.
    pub fn down_reason(&self) -> Option<String> {
        let down: Vec<&str> = self
            .links
            .iter()
            .filter(|link| !Self::link_up(link))
            .map(|link| link.addr.as_str())
            .collect();
        (!down.is_empty()).then(|| format!("broker link down: redis {}", down.join(", ")))
    }

    /// Appends the broker families to a Prometheus text.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP ringws_broker_up Whether the link to this Redis is up (both connections)\n# TYPE ringws_broker_up gauge"
        );
        for link in &self.links {
            let _ = writeln!(
                out,
                "ringws_broker_up{{redis=\"{}\"}} {}",
                link.addr,
                u8::from(Self::link_up(link))
            );
        }
        let families: [(&str, &str, &AtomicU64); 10] = [
            (
                "ringws_broker_history_fetches_total",
                "History fetches from Redis (recoveries and positions of topics this node had not received)",
                &self.history_fetches,
            ),
            (
                "ringws_broker_history_fetch_failures_total",
                "History fetches that failed (Redis down or a reply not understood)",
                &self.history_fetch_failures,
            ),
            (
                "ringws_broker_history_gaps_total",
                "Publications with history that arrived after a gap in their topic's offsets",
                &self.history_gaps,
            ),
            (
                "ringws_broker_published_total",
                "Messages published to Redis",
                &self.published,
            ),
            (
                "ringws_broker_received_total",
                "Messages from other nodes received from Redis",
                &self.received,
            ),
            (
                "ringws_broker_publishes_dropped_total",
                "Publishes not sent to Redis: the link's queue was full (Redis slow or down)",
                &self.publishes_dropped,
            ),
            (
                "ringws_broker_messages_lost_total",
                "Messages of other nodes never received (gaps in their sequences)",
                &self.messages_lost,
            ),
            (
                "ringws_broker_resets_total",
                "Connections to Redis reset after a broken connection or a reply not understood",
                &self.resets,
            ),
            (
                "ringws_broker_foreign_messages_total",
                "Messages on ringws channels that were not a ringws envelope (dropped)",
                &self.foreign,
            ),
            (
                "ringws_broker_frames_compressed_total",
                "Messages from Redis also framed compressed, once per node (permessage-deflate subscribers)",
                &self.compressed,
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MessageKind;

    fn broker() -> Broker {
        Broker::new(&[RedisUrl::parse("redis://127.0.0.1:1").unwrap()])
    }

    #[test]
    fn publishes_beyond_the_queue_are_dropped_and_counted_never_waited_for() {
        let broker = broker();
        let message = SharedMessage::encode(MessageKind::Text, b"x");
        let topic: Arc<str> = Arc::from("t");
        for _ in 0..PUBLISH_QUEUE + 3 {
            broker.publish(Some(&topic), &message);
        }
        let status = broker.status();
        assert_eq!(status.publishes_dropped.load(Ordering::Relaxed), 3);
        assert_eq!(
            status.links[0].queued_bytes.load(Ordering::Relaxed),
            PUBLISH_QUEUE
        );
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let broker = broker();
        let message = SharedMessage::encode(MessageKind::Binary, &vec![0u8; 1 << 20]);
        for _ in 0..(PUBLISH_QUEUE_BYTES >> 20) + 2 {
            broker.publish(None, &message);
        }
        let status = broker.status();
        assert_eq!(status.publishes_dropped.load(Ordering::Relaxed), 2);
        assert_eq!(
            status.links[0].queued_bytes.load(Ordering::Relaxed),
            PUBLISH_QUEUE_BYTES
        );
    }

    #[test]
    fn health_names_the_links_down() {
        let broker = Broker::new(&[
            RedisUrl::parse("redis://a:1").unwrap(),
            RedisUrl::parse("redis://b:2").unwrap(),
        ]);
        let status = broker.status();
        assert_eq!(
            status.down_reason().as_deref(),
            Some("broker link down: redis a:1, b:2")
        );
        for link in &status.links[..1] {
            link.subscriber_up.store(true, Ordering::Relaxed);
            link.publisher_up.store(true, Ordering::Relaxed);
        }
        assert_eq!(
            status.down_reason().as_deref(),
            Some("broker link down: redis b:2")
        );
        status.links[1].subscriber_up.store(true, Ordering::Relaxed);
        assert!(status.down_reason().is_some(), "both connections count");
        status.links[1].publisher_up.store(true, Ordering::Relaxed);
        assert_eq!(status.down_reason(), None);
        let mut text = String::new();
        status.render(&mut text);
        assert!(text.contains("ringws_broker_up{redis=\"b:2\"} 1"), "{text}");
    }
}
