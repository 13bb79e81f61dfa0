//! Fanout: broadcast and publish, encoded once into a shared frame that every receiving queue references,
//! handed to the other workers through their inboxes with one doorbell per worker per batch.
//!
//! Must never copy a shared frame per subscriber or per worker, never ring a doorbell per message, and never
//! let a slow consumer slow the others (the slow-consumer policy applies per connection).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::protocol::frame::{encode_header, OpCode};
use crate::protocol::{CloseCode, MessageKind};
use crate::reactor::{Op, UserData};

use super::{Core, Worker, NO_SLOT};
use crate::server::connection::{flags::*, State};
use crate::server::handler::{ConnId, Handler};

/// A frame handed from one worker to another: encoded once, shared.
pub struct Handoff {
    /// The complete frame bytes.
    pub frame: Arc<[u8]>,
    /// The sending connection, if it must not receive it (worker index, id).
    pub except: Option<(usize, ConnId)>,
    /// `None`: for every open connection (broadcast); `Some(topic)`: for the handler's subscribers of it.
    pub topic: Option<Arc<str>>,
}

/// Encodes one unfragmented server frame (unmasked) into a shared buffer.
pub(crate) fn encode_shared(kind: MessageKind, payload: &[u8]) -> Arc<[u8]> {
    let opcode = match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    };
    let mut header = [0u8; 14];
    let header_len = encode_header(&mut header, true, opcode, payload.len() as u64, None);
    let mut frame = Vec::with_capacity(header_len + payload.len());
    frame.extend_from_slice(&header[..header_len]);
    frame.extend_from_slice(payload);
    frame.into()
}

impl<H: Handler> Worker<'_, H> {
    pub(super) fn on_doorbell(&mut self) {
        while let Ok(handoff) = self.inbox.try_recv() {
            match handoff.topic {
                None => {
                    // Topic frames received before it go out first (in handoff order).
                    self.notify_closed();
                    self.core.deliver_shared(&handoff.frame, handoff.except)
                }
                Some(topic) => self.core.published.push((topic, handoff.frame)),
            }
        }
        if !self.core.shutting_down && self.core.shared.shutdown.load(Ordering::Acquire) {
            self.core.begin_shutdown();
        }
    }
}

impl Core {
    pub(crate) fn broadcast(&mut self, kind: MessageKind, payload: &[u8], except: Option<ConnId>) {
        let frame = encode_shared(kind, payload);
        self.metrics.frames_encoded.inc();
        let except = except.map(|id| (self.index, id));
        self.hand_off(&frame, except, None);
        self.deliver_shared(&frame, except);
    }

    /// Publishes on `topic`: one encoded frame, handed to every other worker; every worker's handler
    /// (this one's after the current event) gets it in `on_published`.
    pub(crate) fn publish(&mut self, topic: &str, kind: MessageKind, payload: &[u8]) {
        let frame = encode_shared(kind, payload);
        self.metrics.frames_encoded.inc();
        let topic: Arc<str> = Arc::from(topic);
        self.hand_off(&frame, None, Some(&topic));
        self.published.push((topic, frame));
    }

    pub(super) fn hand_off(
        &mut self,
        frame: &Arc<[u8]>,
        except: Option<(usize, ConnId)>,
        topic: Option<&Arc<str>>,
    ) {
        for (worker, sender) in self.shared.inboxes.iter().enumerate() {
            if worker == self.index {
                continue;
            }
            let handoff = Handoff {
                frame: Arc::clone(frame),
                except,
                topic: topic.cloned(),
            };
            if sender.send(handoff).is_ok() {
                self.doorbells[worker] = true;
            }
        }
    }

    /// Queues a shared frame to one connection, applying the slow-consumer policy. Returns whether it was
    /// queued.
    pub(crate) fn send_frame(&mut self, id: ConnId, frame: &Arc<[u8]>) -> bool {
        let Some(key) = self.live_open(id) else {
            return false;
        };
        let conn = &mut self.conns[key];
        if conn.queued_bytes() > self.config.max_backpressure {
            match self.config.slow_consumer {
                crate::server::config::SlowConsumerPolicy::Drop => {
                    self.metrics.slow_consumer_drops.inc()
                }
                crate::server::config::SlowConsumerPolicy::Close => {
                    self.metrics.slow_consumer_closes.inc();
                    self.send_close(key, CloseCode::POLICY, "slow consumer");
                    self.leave_open(key, Some(CloseCode::POLICY));
                }
            }
            return false;
        }
        let queue = conn.queue.get_or_insert_with(|| self.pool.take_queue());
        queue.push_shared(Arc::clone(frame));
        self.metrics.deliveries.inc();
        self.metrics.messages_out.inc();
        self.metrics.bytes_out.add(frame.len() as u64);
        self.mark_dirty(key);
        true
    }

    /// Queues a shared frame to every open connection of this worker (a reference each, no copy),
    /// applying the slow-consumer policy to those over the backpressure cap.
    pub(super) fn deliver_shared(&mut self, frame: &Arc<[u8]>, except: Option<(usize, ConnId)>) {
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
            if conn.queued_bytes() > cap {
                match policy {
                    crate::server::config::SlowConsumerPolicy::Drop => {
                        self.metrics.slow_consumer_drops.inc();
                    }
                    crate::server::config::SlowConsumerPolicy::Close => slow.push(key),
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

    pub(super) fn ring_doorbells(&mut self) {
        for worker in 0..self.doorbells.len() {
            if !std::mem::take(&mut self.doorbells[worker]) {
                continue;
            }
            let fd = self.shared.ring_fds[worker].load(Ordering::Acquire);
            if fd >= 0 {
                self.metrics.handoffs.inc();
                self.ring.ring_doorbell(
                    fd,
                    0,
                    UserData::new(NO_SLOT, 0, Op::Doorbell).encode(),
                    UserData::new(NO_SLOT, 0, Op::Cancel).encode(),
                );
            }
        }
    }
}
