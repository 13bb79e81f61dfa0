//! Fanout: broadcast and publish. A message is encoded once into a [`SharedMessage`] that every receiving
//! queue references, handed to the other workers through their inboxes ([`WorkerMessage`]) with one
//! doorbell per worker per batch, and delivered by each worker to its own connections.
//!
//! Must never copy a shared frame per subscriber or per worker, never ring a doorbell per message, and never
//! let a slow consumer slow the others (the slow-consumer policy applies per connection).
//!
//! Handoffs are bounded: a message for a worker whose inbox is full is dropped for that worker and counted
//! (`ringws_handoff_drops_total`), never waited for. A doorbell (or tick) drains at most [`DRAIN_BATCH`]
//! messages, then rings the worker's own doorbell so that the rest is taken on the next loop iteration,
//! after the completions already waiting. A doorbell is rung only when the last one rung was answered (the
//! worker began draining since), so a flood makes one doorbell per drain. A doorbell whose `MSG_RING`
//! fails is counted and rung once more; past that the receiving worker's tick drains its inbox, so a lost
//! doorbell delays delivery by at most one tick and never loses a message.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::protocol::{CloseCode, MessageKind};
use crate::reactor::{Op, UserData};
use crate::server::config::SlowConsumerPolicy;
use crate::server::connection::{flags::*, State};
use crate::server::handler::{ConnId, Handler};
use crate::server::inbox::{Sent, WorkerMessage, DRAIN_BATCH};
use crate::server::shared_message::SharedMessage;

use super::{Core, Worker};
use crate::reactor::NO_CONNECTION;

impl<H: Handler> Worker<'_, H> {
    /// Takes up to [`DRAIN_BATCH`] messages from the inbox (on a doorbell, and on every tick); if that
    /// many were taken, rings this worker's own doorbell at the end of the batch for the rest. At most one
    /// such batch per loop iteration: the doorbells that complete after it in the same iteration leave
    /// the inbox to the own doorbell, so that many doorbells in one iteration cannot take a whole flood.
    pub(super) fn on_doorbell(&mut self) {
        if self.core.doorbells[self.core.index] {
            return;
        }
        self.core.shared.inboxes.answer_doorbell(self.core.index);
        let mut taken = 0;
        while taken < DRAIN_BATCH {
            let Ok(received) = self.inbox.try_recv() else {
                break;
            };
            taken += 1;
            match received {
                WorkerMessage::Broadcast { message, except } => {
                    // Topic messages received before it go out first (in handoff order).
                    self.run_deferred_callbacks();
                    self.core.deliver_shared(&message, except)
                }
                WorkerMessage::Publish { topic, message } => {
                    self.core.published.push((topic, message))
                }
            }
        }
        if taken == DRAIN_BATCH {
            // Maybe more: the next loop iteration takes them, after the completions waiting now.
            self.core.doorbells[self.core.index] = true;
        }
        if !self.core.shutting_down && self.core.shared.shutdown.load(Ordering::Acquire) {
            self.core.begin_shutdown();
        }
    }
}

impl Core {
    pub(crate) fn broadcast(&mut self, kind: MessageKind, payload: &[u8], except: Option<ConnId>) {
        let message = SharedMessage::encode(kind, payload);
        self.metrics.frames_encoded.inc();
        let except = except.map(|id| (self.index, id));
        self.hand_off(|| WorkerMessage::Broadcast {
            message: message.clone(),
            except,
        });
        self.deliver_shared(&message, except);
    }

    /// Publishes on `topic`: one encoded message, handed to every other worker; every worker's handler
    /// (this one's after the current event) gets it in `on_published`.
    pub(crate) fn publish(&mut self, topic: &str, kind: MessageKind, payload: &[u8]) {
        let message = SharedMessage::encode(kind, payload);
        self.metrics.frames_encoded.inc();
        let topic: Arc<str> = Arc::from(topic);
        self.hand_off(|| WorkerMessage::Publish {
            topic: Arc::clone(&topic),
            message: message.clone(),
        });
        self.published.push((topic, message));
    }

    /// Puts one message (made by `make`) in every other worker's inbox and marks its doorbell for the end
    /// of the batch. A worker whose inbox is full loses this message (counted in its
    /// `handoff_drops`); its doorbell is rung all the same.
    pub(super) fn hand_off(&mut self, mut make: impl FnMut() -> WorkerMessage) {
        for worker in 0..self.shared.inboxes.len() {
            if worker == self.index {
                continue;
            }
            match self.shared.inboxes.send(worker, make()) {
                Sent::Queued => self.doorbells[worker] = true,
                Sent::Full => {
                    self.shared.metrics[worker].handoff_drops.inc();
                    self.doorbells[worker] = true;
                }
                Sent::Gone => {}
            }
        }
    }

    /// Queues a shared message to one connection (a reference, no copy), applying the slow-consumer
    /// policy. Returns whether it was queued.
    pub(crate) fn send_shared(&mut self, id: ConnId, message: &SharedMessage) -> bool {
        let Some(key) = self.live_open(id) else {
            return false;
        };
        let conn = &mut self.conns[key];
        if conn.queued_cost() > self.config.max_backpressure {
            match self.config.slow_consumer {
                SlowConsumerPolicy::Drop => self.metrics.slow_consumer_drops.inc(),
                SlowConsumerPolicy::Close => {
                    self.metrics.slow_consumer_closes.inc();
                    self.send_close(key, CloseCode::POLICY, "slow consumer");
                    self.leave_open(key, Some(CloseCode::POLICY));
                }
            }
            return false;
        }
        let frame = message.plain_frame();
        let queue = conn.queue.get_or_insert_with(|| self.pool.take_queue());
        queue.push_shared(Arc::clone(frame));
        self.metrics.deliveries.inc();
        self.metrics.messages_out.inc();
        self.metrics.bytes_out.add(frame.len() as u64);
        self.mark_dirty(key);
        true
    }

    /// Queues a shared message to every open connection of this worker (a reference each, no copy),
    /// applying the slow-consumer policy to those over the backpressure cap.
    pub(super) fn deliver_shared(
        &mut self,
        message: &SharedMessage,
        except: Option<(usize, ConnId)>,
    ) {
        let frame = message.plain_frame();
        let skip = except
            .filter(|(worker, _)| *worker == self.index)
            .map(|(_, id)| id);
        let cap = self.config.max_backpressure;
        let policy = self.config.slow_consumer;
        let mut slow: Vec<usize> = Vec::new();
        let mut delivered = 0u64;
        for (key, conn) in self.conns.iter_mut() {
            if conn.state != State::Open || conn.has(CLOSE_SENT) {
                continue;
            }
            if skip.is_some_and(|id| id.key as usize == key && id.generation == conn.generation) {
                continue;
            }
            if conn.queued_cost() > cap {
                match policy {
                    SlowConsumerPolicy::Drop => {
                        self.metrics.slow_consumer_drops.inc();
                    }
                    SlowConsumerPolicy::Close => slow.push(key),
                }
                continue;
            }
            let queue = conn.queue.get_or_insert_with(|| self.pool.take_queue());
            queue.push_shared(Arc::clone(frame));
            delivered += 1;
            if !conn.has(DIRTY) {
                conn.set(DIRTY);
                self.dirty.push(key as u32);
            }
        }
        self.metrics.deliveries.add(delivered);
        self.metrics.messages_out.add(delivered);
        self.metrics.bytes_out.add(delivered * frame.len() as u64);
        for key in slow {
            self.metrics.slow_consumer_closes.inc();
            self.send_close(key, CloseCode::POLICY, "slow consumer");
            self.leave_open(key, Some(CloseCode::POLICY));
        }
    }

    /// Rings the doorbell of every worker marked in this batch whose doorbell is not already rung and
    /// unanswered (and this worker's own, when its inbox held more than one drain's worth).
    pub(super) fn ring_doorbells(&mut self) {
        for worker in 0..self.doorbells.len() {
            if !std::mem::take(&mut self.doorbells[worker]) {
                continue;
            }
            if worker == self.index {
                // The rest of this worker's own inbox, on the next loop iteration.
                self.ring_doorbell(worker, 0);
            } else if self.shared.inboxes.claim_doorbell(worker) {
                self.metrics.handoffs.inc();
                self.ring_doorbell(worker, 0);
            }
        }
    }

    /// A `MSG_RING` to `worker`'s ring; only a failure completes on this ring ([`Op::DoorbellSent`], with
    /// the attempt as generation).
    fn ring_doorbell(&mut self, worker: usize, attempt: u32) {
        if let Some(fd) = self.shared.inboxes.ring_fd(worker) {
            self.ring.ring_doorbell(
                fd,
                0,
                UserData::new(NO_CONNECTION, 0, Op::Doorbell).encode(),
                UserData::new(worker as u32, attempt, Op::DoorbellSent).encode(),
            );
        }
    }

    /// A doorbell this worker rang failed (its `MSG_RING` completed with an error, such as a full
    /// completion queue on the receiving side): counted, and rung once more, submitted with this batch's
    /// end. A second failure is left to the receiving worker's tick, which drains its inbox, so a failing
    /// target never makes this worker spin.
    pub(super) fn on_doorbell_sent(&mut self, sent: UserData, result: i32) {
        if result >= 0 {
            return;
        }
        self.metrics.doorbell_failures.inc();
        let worker = sent.key as usize;
        if let Some(attempt) = doorbell_retry(sent.generation, result) {
            if worker < self.doorbells.len() {
                self.ring_doorbell(worker, attempt);
            }
        }
    }
}

/// After a doorbell's `MSG_RING` completed with `result` on its `attempt`: the attempt to ring again with,
/// or `None` (it went through, or it failed twice and the receiving worker's tick drains its inbox).
fn doorbell_retry(attempt: u32, result: i32) -> Option<u32> {
    (result < 0 && attempt == 0).then_some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_doorbell_is_rung_once_more_never_in_a_loop() {
        assert_eq!(doorbell_retry(0, 0), None);
        assert_eq!(doorbell_retry(0, -libc::EOVERFLOW), Some(1));
        assert_eq!(doorbell_retry(1, -libc::EOVERFLOW), None);
        assert_eq!(doorbell_retry(1, 0), None);
    }
}
