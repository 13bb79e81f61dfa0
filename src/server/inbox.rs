//! What crosses threads to a worker: one message type for every sender (the other workers, the
//! `ServerHandle`, and later the broker), each worker's inbox, and the ring fd its doorbell rings.
//!
//! A sender pushes into the inbox first and rings the doorbell after (a `MSG_RING` completion on the
//! receiving worker's ring), once per batch and not per message; the worker drains its inbox when the
//! doorbell completes. Must never carry a per-receiver copy of a message: a [`SharedMessage`] is a reference.
//! Control messages that must reach every worker (such as a new TLS configuration) join
//! [`WorkerMessage`] as variants of their own.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
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
}

/// Every worker's inbox (sending side) and the fd of its ring, for doorbells.
pub(crate) struct Inboxes {
    senders: Vec<Sender<WorkerMessage>>,
    /// Each worker's ring fd (for `MSG_RING` doorbells), -1 until it runs.
    ring_fds: Vec<AtomicI32>,
}

impl Inboxes {
    /// Inboxes for `workers` workers, with the receiving end of each (in worker order).
    pub(crate) fn new(workers: usize) -> (Inboxes, Vec<Receiver<WorkerMessage>>) {
        let (senders, receivers) = (0..workers).map(|_| mpsc::channel()).unzip();
        let inboxes = Inboxes {
            senders,
            ring_fds: (0..workers).map(|_| AtomicI32::new(-1)).collect(),
        };
        (inboxes, receivers)
    }

    /// Number of workers.
    pub(crate) fn len(&self) -> usize {
        self.senders.len()
    }

    /// Puts `message` in `worker`'s inbox; false if that worker is gone. The caller rings its doorbell.
    pub(crate) fn send(&self, worker: usize, message: WorkerMessage) -> bool {
        self.senders[worker].send(message).is_ok()
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
        let (inboxes, receivers) = Inboxes::new(2);
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
            assert!(inboxes.send(1, sent));
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
        assert!(!inboxes.send(
            0,
            WorkerMessage::Broadcast {
                message,
                except: None
            }
        ));
    }
}
