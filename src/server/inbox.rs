//! What crosses threads to a worker: one message type for every sender (the other workers, the
//! `ServerHandle`, and later the broker), each worker's inbox, and the ring fd its doorbell rings.
//!
//! A sender pushes into the inbox first and rings the doorbell after (a `MSG_RING` completion on the
//! receiving worker's ring), once per batch and not per message; the worker drains its inbox when the
//! doorbell completes. Must never carry a per-receiver copy of a message: a [`SharedMessage`] is a reference.
//! Control messages that must reach every worker (such as a new TLS configuration) join
//! [`WorkerMessage`] as variants of their own.
//!
//! Each inbox is bounded, in messages ([`DEFAULT_INBOX_CAPACITY`] unless configured). The bound is in
//! messages, not bytes, because an entry is a reference: the frame it points to is shared with every other
//! worker's inbox and the sender's own queues, so a byte count per inbox would count the same frame once per
//! worker. A sender never blocks on a full inbox: the message is dropped for that worker and the sender
//! counts it ([`Sent::Full`], `ringws_handoff_drops_total`), as the slow-consumer rule does for one
//! connection. A worker drains at most [`DRAIN_BATCH`] messages per doorbell so that a flood cannot starve
//! its other connections.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use super::handler::ConnId;
use super::shared_message::SharedMessage;

/// A message for one worker from another thread.
#[derive(Debug, Clone)]
pub enum WorkerMessage {
    /// For every open connection of the worker, except `except` (worker index, connection).
    Broadcast {
        message: SharedMessage,
        except: Option<(usize, ConnId)>,
    },
    /// Published on `topic`: for the worker's handler (`Handler::on_published`), in publish order.
    Publish {
        topic: Arc<str>,
        message: SharedMessage,
    },
    /// The answer to a history fetch this worker asked the broker for (`Ctx::fetch`), for its handler
    /// (`Handler::on_fetched`), after the publications received before it.
    Fetched(Box<Fetched>),
}

/// The answer to a history fetch (`Ctx::fetch`): from Redis, across nodes.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The connection it was asked for.
    pub conn: ConnId,
    pub topic: Arc<str>,
    /// The tag given to `Ctx::fetch`.
    pub tag: u64,
    /// `Err`: Redis could not be asked or answered with something else.
    pub result: Result<FetchedPage, ()>,
}

/// A topic's history as Redis has it.
#[derive(Debug, Clone)]
pub struct FetchedPage {
    /// The newest offset and the epoch; `None` when the topic has no history.
    pub position: Option<crate::channels::Position>,
    /// The publications after the offset asked for, oldest first, each with its position.
    pub entries: Vec<(u64, SharedMessage)>,
    /// For a presence query: every member's JSON (`{"client":..,"user":..,"info":..}`) on every node.
    pub members: Vec<Box<str>>,
}

/// Messages an inbox holds by default (8192 entries of a few dozen bytes each: about half a MiB of slots
/// per worker, allocated once; eight doorbells' worth of [`DRAIN_BATCH`]).
pub const DEFAULT_INBOX_CAPACITY: usize = 8192;

/// The most messages a worker takes from its inbox per doorbell (or tick) before it lets its other
/// completions run; the rest waits for the next loop iteration.
pub(crate) const DRAIN_BATCH: usize = 1024;

/// What became of a message put in an inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// In the inbox: the caller rings the worker's doorbell.
    Queued,
    /// The inbox was full: the message is dropped for that worker; the caller counts it.
    Full,
    /// The worker is gone.
    Gone,
}

/// Every worker's inbox (sending side) and the fd of its ring, for doorbells.
pub(crate) struct Inboxes {
    senders: Vec<SyncSender<WorkerMessage>>,
    /// Each worker's ring fd (for `MSG_RING` doorbells), -1 until it runs.
    ring_fds: Vec<AtomicI32>,
    /// Each worker's doorbell has been rung and not yet answered (the worker has not started draining
    /// since): senders ring only when they set it, so a flood makes one doorbell per drain, not one per
    /// message or per sender.
    rung: Vec<AtomicBool>,
}

impl Inboxes {
    /// Inboxes for `workers` workers holding at most `capacity` messages each (at least 1), with the
    /// receiving end of each (in worker order).
    pub(crate) fn new(workers: usize, capacity: usize) -> (Inboxes, Vec<Receiver<WorkerMessage>>) {
        let (senders, receivers) = (0..workers)
            .map(|_| mpsc::sync_channel(capacity.max(1)))
            .unzip();
        let inboxes = Inboxes {
            senders,
            ring_fds: (0..workers).map(|_| AtomicI32::new(-1)).collect(),
            rung: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        };
        (inboxes, receivers)
    }

    /// Number of workers.
    pub(crate) fn len(&self) -> usize {
        self.senders.len()
    }

    /// Puts `message` in `worker`'s inbox without ever blocking. On [`Sent::Queued`] the caller rings
    /// its doorbell; on [`Sent::Full`] the message is dropped for that worker and the caller counts it.
    pub(crate) fn send(&self, worker: usize, message: WorkerMessage) -> Sent {
        match self.senders[worker].try_send(message) {
            Ok(()) => Sent::Queued,
            Err(TrySendError::Full(_)) => Sent::Full,
            Err(TrySendError::Disconnected(_)) => Sent::Gone,
        }
    }

    /// Called after putting messages in `worker`'s inbox: whether the caller must ring its doorbell
    /// (false when a doorbell rung earlier has not been answered yet; that answer drains these messages
    /// too).
    pub(crate) fn claim_doorbell(&self, worker: usize) -> bool {
        !self.rung[worker].swap(true, Ordering::AcqRel)
    }

    /// Called by `worker` before it drains its inbox: messages put after this ring the doorbell again.
    pub(crate) fn answer_doorbell(&self, worker: usize) {
        self.rung[worker].store(false, Ordering::Release);
    }

    /// Records `worker`'s ring fd once it runs.
    pub(crate) fn set_ring_fd(&self, worker: usize, fd: i32) {
        self.ring_fds[worker].store(fd, Ordering::Release);
    }

    /// `worker`'s ring fd, or `None` before it runs.
    pub(crate) fn ring_fd(&self, worker: usize) -> Option<i32> {
        let fd = self.ring_fds[worker].load(Ordering::Acquire);
        (fd >= 0).then_some(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MessageKind;

    #[test]
    fn messages_arrive_in_order_and_share_their_frame() {
        let (inboxes, receivers) = Inboxes::new(2, 4);
        assert_eq!(inboxes.len(), 2);
        assert_eq!(inboxes.ring_fd(1), None);
        inboxes.set_ring_fd(1, 7);
        assert_eq!(inboxes.ring_fd(1), Some(7));
        let message = SharedMessage::encode(MessageKind::Text, b"hi");
        for topic in ["a", "b"] {
            let sent = WorkerMessage::Publish {
                topic: Arc::from(topic),
                message: message.clone(),
            };
            assert_eq!(inboxes.send(1, sent), Sent::Queued);
        }
        let got: Vec<_> = receivers[1].try_iter().collect();
        assert_eq!(got.len(), 2);
        for (received, topic) in got.iter().zip(["a", "b"]) {
            match received {
                WorkerMessage::Publish {
                    topic: t,
                    message: m,
                } => {
                    assert_eq!(&**t, topic);
                    assert!(Arc::ptr_eq(m.plain_frame(), message.plain_frame()));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(receivers[0].try_recv().is_err());
        drop(receivers);
        assert_eq!(
            inboxes.send(
                0,
                WorkerMessage::Broadcast {
                    message,
                    except: None
                }
            ),
            Sent::Gone
        );
    }

    fn numbered(n: usize) -> WorkerMessage {
        WorkerMessage::Publish {
            topic: Arc::from(n.to_string()),
            message: SharedMessage::encode(MessageKind::Text, b"x"),
        }
    }

    fn number(message: WorkerMessage) -> usize {
        match message {
            WorkerMessage::Publish { topic, .. } => topic.parse().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_inbox_refuses_without_blocking_and_keeps_the_order_of_what_it_took() {
        let (inboxes, receivers) = Inboxes::new(2, 3);
        let results: Vec<Sent> = (0..5).map(|n| inboxes.send(1, numbered(n))).collect();
        assert_eq!(
            results,
            [
                Sent::Queued,
                Sent::Queued,
                Sent::Queued,
                Sent::Full,
                Sent::Full
            ]
        );
        // The other worker's inbox is its own.
        assert_eq!(inboxes.send(0, numbered(9)), Sent::Queued);
        let got: Vec<usize> = receivers[1].try_iter().map(number).collect();
        assert_eq!(got, [0, 1, 2]);
        // Drained, it takes messages again, in order.
        assert_eq!(inboxes.send(1, numbered(5)), Sent::Queued);
        assert_eq!(inboxes.send(1, numbered(6)), Sent::Queued);
        let got: Vec<usize> = receivers[1].try_iter().map(number).collect();
        assert_eq!(got, [5, 6]);
    }

    #[test]
    fn a_doorbell_is_rung_once_until_answered() {
        let (inboxes, _receivers) = Inboxes::new(2, 4);
        assert!(inboxes.claim_doorbell(1));
        assert!(!inboxes.claim_doorbell(1));
        // Each worker's doorbell is its own.
        assert!(inboxes.claim_doorbell(0));
        inboxes.answer_doorbell(1);
        assert!(inboxes.claim_doorbell(1));
        assert!(!inboxes.claim_doorbell(1));
    }

    #[test]
    fn a_zero_capacity_still_holds_one_message() {
        // A rendezvous channel would refuse every message sent while the worker is not waiting on it.
        let (inboxes, receivers) = Inboxes::new(1, 0);
        assert_eq!(inboxes.send(0, numbered(1)), Sent::Queued);
        assert_eq!(inboxes.send(0, numbered(2)), Sent::Full);
        assert_eq!(receivers[0].try_iter().map(number).collect::<Vec<_>>(), [1]);
    }
}
