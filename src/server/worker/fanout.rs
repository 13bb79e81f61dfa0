//! Fanout: broadcast and publish. A message is encoded once into a [`SharedMessage`] that every receiving
//! queue references (with permessage-deflate on and the message at or above the threshold, also compressed
//! once: each connection gets the compressed or the plain frame by its agreement), handed to the other
//! workers through their inboxes ([`WorkerMessage`]) with one doorbell per worker per batch, and delivered
//! by each worker to its own connections.
//!
//! Must never copy or compress a shared frame per subscriber or per worker, never ring a doorbell per message, and never
//! let a slow consumer slow the others (the slow-consumer policy applies per connection).
//!
//! The small broadcasts one receive buffer of a connection makes are delivered here together when the buffer
//! is read ([`BroadcastRun`]): their frames joined once into one shared buffer, so that each receiver
//! queues one chunk and makes one send for all of them; order is kept by delivering the run before
//! anything else is queued.
//!
//! Across nodes (`--broker`): every publish and broadcast made here ([`Core::publish`], [`Core::broadcast`])
//! is also handed, as the same shared frame, to the node's broker (`crate::broker`, a bounded queue, never
//! waited for), and a topic's first and last subscriber in this worker are told to it
//! ([`Core::topic_interest`]). Messages from other nodes arrive in the inbox like another worker's.
//!
//! Handoffs are bounded: a message for a worker whose inbox is full is dropped for that worker and counted
//! (`ringws_handoff_drops_total`), never waited for. A doorbell (or tick) drains at most [`DRAIN_BATCH`]
//! messages, then rings the worker's own doorbell so that the rest is taken on the next loop iteration,
//! after the completions already waiting. A doorbell is rung only when the last one rung was answered (the
//! worker began draining since), so a flood makes one doorbell per drain. A doorbell whose `MSG_RING`
//! fails is counted and rung once more; past that the receiving worker's tick drains its inbox, so a lost
//! doorbell delays delivery by at most one tick and never loses a message.
//!
//! A broadcasting connection has a fanout budget ([`SenderBudget`], `--sender-budget pause`, the
//! default): when its broadcast finds most of this worker's receivers with more than [`fanout_budget`]
//! queued, its reads are paused like those of a reader whose own replies pile up (the multishot receive is
//! cancelled), so that a fast sender slows down to what its readers take instead of getting them closed as
//! slow consumers. The budget is checked after each receive buffer, whose frames are all read (the
//! overshoot: one receive buffer of input). What the kernel had already received when the receive was
//! cancelled (completions waiting in the same batch, at most the worker's buffer ring) is kept, copied in
//! order, and read when the sender resumes, a receive buffer's worth at a time with the budget checked
//! between, before it receives again. The worker resumes the senders when the least full of those
//! receivers drains to half the budget (on its send completion), is gone, or did not drain within
//! [`MAX_SENDER_PAUSE`] (checked on every tick); never the sender itself. A receiver still over half the
//! budget when that wait ends is a slow receiver ([`SLOW_RECEIVER`], counted): it no longer counts against
//! any sender until it drains, so that slow receivers never hold a sender back twice and the slow-consumer
//! policy meets them at the cap. A receiver that does not read still drains while the kernel takes its
//! bytes (its socket send buffer, megabytes on Linux), so it paces the sender like a reader until that is
//! full. The cost per delivery is one comparison and a counter; a pause costs one cancel and one entry in
//! a list kept from pause to pause.
//!
//! Timing (off unless this module logs at debug level): a delivery to at least [`TIMED_FANOUT_MIN`]
//! connections of a worker is timed, one at a time per worker: when it began here, when its sends were
//! handed to the ring (the end of that batch), when the last of its receivers' queues drained (their send
//! completions), and the worker thread's CPU time in between; one `timed fanout` line per worker and
//! delivery, with times in microseconds since one process-wide instant, so that the lines of all
//! workers add up to the server's time from the first worker's start to the last send completed
//! (`scripts/scale/run.py` does that). Off, it costs a level check per delivery and a bit test per send
//! completion.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::channels::Position;
use crate::protocol::deflate::{DeflateMode, Negotiated};
use crate::protocol::{CloseCode, MessageKind};
use crate::reactor::{Op, UserData};
use crate::server::config::{SenderBudgetPolicy, ServerConfig, SlowConsumerPolicy};
use crate::server::connection::fanout_flags::{
    EVENT_STREAM, HOLDS_INPUT, SENDER_PAUSED, SLOW_RECEIVER, TIMED_DELIVERY,
};
use crate::server::connection::{flags::*, State};
use crate::server::handler::{ConnId, Handler};
use crate::server::inbox::{Sent, WorkerMessage, DRAIN_BATCH};
use crate::server::metrics::{DEFLATE_OUT_COMPRESSED, DEFLATE_OUT_PLAIN};
use crate::server::shared_message::SharedMessage;

use super::{Core, Worker};
use crate::reactor::sys::thread_cpu_time;
use crate::reactor::NO_CONNECTION;

impl<H: Handler> Worker<'_, H> {
    /// Takes up to [`DRAIN_BATCH`] messages from the inbox (on a doorbell, and on every tick); if that
    /// many were taken, rings this worker's own doorbell at the end of the batch for the rest. At most one
    /// such batch per loop iteration: the doorbells that complete after it in the same iteration leave
    /// the inbox to the own doorbell, so that many doorbells in one iteration cannot take a whole flood.
    pub(super) fn on_doorbell(&mut self) {
        // On every tick too: senders paused for a receiver that is gone, or waited long enough.
        self.core.review_paused_senders();
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
                    self.core.deliver_shared(&message, except);
                }
                WorkerMessage::Publish { topic, message } => {
                    self.core.published.push((topic, message))
                }
                WorkerMessage::Fetched(fetched) => {
                    // After the publications received before it (a recovering subscriber's live
                    // publications are held until this answer).
                    self.run_deferred_callbacks();
                    self.handler.on_fetched(
                        &mut crate::server::handler::Ctx {
                            core: &mut self.core,
                        },
                        *fetched,
                    );
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

impl<H: Handler> Worker<'_, H> {
    /// At the end of a batch: resumed senders read the input they kept while paused, one receive buffer's
    /// worth at a time with their budget checked between (so that a sender paused again keeps the rest),
    /// and receive again once all of it is read.
    pub(super) fn feed_resumed_senders(&mut self) {
        if self.core.sender_budget.resumed.is_empty() {
            return;
        }
        let mut resumed = std::mem::take(&mut self.core.sender_budget.resumed);
        for id in resumed.drain(..) {
            let key = id.key as usize;
            if self
                .core
                .conns
                .get(key)
                .is_some_and(|conn| conn.generation == id.generation)
            {
                self.feed_held_input(key);
            }
        }
        // Senders resumed while this ran read theirs on the next batch.
        if self.core.sender_budget.resumed.is_empty() {
            self.core.sender_budget.resumed = resumed;
        }
        self.run_deferred_callbacks();
    }

    /// Reads the input a resumed sender kept; what follows a close or an error is dropped as `on_input`
    /// drops it.
    fn feed_held_input(&mut self, key: usize) {
        let chunk = self.core.config.recv_buffer_size.max(1);
        let conn = &mut self.core.conns[key];
        if conn.has_fanout(SENDER_PAUSED) {
            return;
        }
        conn.clear_fanout(HOLDS_INPUT);
        let Some(mut held) = conn.take_held_input() else {
            return;
        };
        let mut read = 0;
        while read < held.len() {
            let conn = &self.core.conns[key];
            if conn.has(DISCARD_INPUT | ENDING) {
                read = held.len();
                break;
            }
            if conn.has_fanout(SENDER_PAUSED) {
                break;
            }
            let end = held.len().min(read + chunk);
            self.feed(key, &mut held[read..end]);
            read = end;
            self.core.check_backpressure(key);
            self.core.check_sender_budget(key);
        }
        let conn = &mut self.core.conns[key];
        if read < held.len() {
            held.drain(..read);
            conn.unread_held_input(held);
            conn.set_fanout(HOLDS_INPUT);
            return;
        }
        // Dropped, not pooled: it may be far larger than the frames the pool is for.
        drop(held);
        if !conn.has(RECV_PAUSED | RECV_ARMED | ENDING) {
            self.core.arm_recv(key);
        }
    }
}

impl Core {
    /// Broadcasts from this worker (from the handler of the connection whose input is being read): to every
    /// other worker, and to this worker's connections; what this delivery found is kept for that
    /// connection's fanout budget ([`Core::check_sender_budget`]).
    pub(crate) fn broadcast(&mut self, kind: MessageKind, payload: &[u8], except: Option<ConnId>) {
        let message = self.encode_shared(kind, payload);
        let except = except.map(|id| (self.index, id));
        self.hand_off(|| WorkerMessage::Broadcast {
            message: message.clone(),
            except,
        });
        if let Some(broker) = &self.shared.broker {
            broker.publish(None, &message);
        }
        let run = &mut self.sender_budget.run;
        let frame = message.plain_frame();
        let joinable =
            run.reading && message.compressed_frame().is_none() && frame.len() <= RUN_FRAME_MAX;
        if !joinable {
            let fanout = self.deliver_shared(&message, except);
            self.sender_budget.last = Some(fanout);
            return;
        }
        if run.count > 0 && (run.except != except || run.joined.len() + frame.len() > RUN_MAX_BYTES)
        {
            self.deliver_run();
        }
        let run = &mut self.sender_budget.run;
        if run.count == 0 {
            run.except = except;
            run.first = Some(Arc::clone(frame));
        }
        run.joined.extend_from_slice(frame);
        run.count += 1;
    }

    /// Delivers the broadcast run held while a connection's input is read (see [`BroadcastRun`]) to
    /// this worker's connections: its one message as it is, or its frames joined into one shared buffer,
    /// so that each receiver queues one chunk (one reference, one `send`) for the whole run. Called before
    /// anything else is queued to any connection, and when the input is read; a no-op without a run.
    #[inline]
    pub(super) fn deliver_run(&mut self) {
        if self.sender_budget.run.count > 0 {
            self.deliver_run_now();
        }
    }

    fn deliver_run_now(&mut self) {
        let run = &mut self.sender_budget.run;
        let count = std::mem::take(&mut run.count);
        let except = run.except.take();
        let first = run.first.take().expect("a run holds its first frame");
        let frame = if count == 1 {
            first
        } else {
            Arc::from(&run.joined[..])
        };
        run.joined.clear();
        if run.joined.capacity() > RUN_MAX_BYTES {
            run.joined = Vec::new();
        }
        let fanout = self.deliver_local(|_| &frame, u64::from(count), except);
        self.sender_budget.last = Some(fanout);
    }

    /// Publishes on `topic`: one encoded message, handed to every other worker; every worker's handler
    /// (this one's after the current event) gets it in `on_published`. With the node's history, the
    /// publication gets the topic's next offset (returned) and is handed on under the history's lock, so
    /// that every worker receives a topic's publications in offset order.
    pub(crate) fn publish(
        &mut self,
        topic: &str,
        kind: MessageKind,
        payload: &[u8],
    ) -> Option<Position> {
        let message = self.encode_shared(kind, payload);
        let topic: Arc<str> = Arc::from(topic);
        if let (Some(broker), Some(_)) = (&self.shared.broker, &self.shared.history) {
            // Across nodes, Redis gives the offset: the publication comes back to this node too, in
            // offset order, and is delivered then (`broker::history`).
            broker.publish_with_history(&topic, &message);
            return None;
        }
        let Some(history) = self.history.take() else {
            self.hand_on(&topic, &message.into_publication());
            return None;
        };
        let position = history.append(
            &topic,
            message,
            Instant::now(),
            SharedMessage::with_position,
            |message| self.hand_on_in_order(&topic, message),
        );
        self.history = Some(history);
        Some(position)
    }

    /// A publication with an offset: into every worker's inbox, this worker's own included (called under
    /// the history's lock, so every inbox holds the topic's publications in offset order, and this
    /// worker delivers its own after those of other workers that came first, on its next loop
    /// iteration), and to the broker.
    fn hand_on_in_order(&mut self, topic: &Arc<str>, message: &SharedMessage) {
        for worker in 0..self.shared.inboxes.len() {
            let sent = WorkerMessage::Publish {
                topic: Arc::clone(topic),
                message: message.clone(),
            };
            match self.shared.inboxes.send(worker, sent) {
                Sent::Queued => self.doorbells[worker] = true,
                // A burst of this worker's own publications over its inbox: delivered at the end of the
                // event instead (in offset order among themselves; one that comes before another
                // worker's earlier offset makes the handler catch up from the history).
                Sent::Full if worker == self.index => {
                    self.published.push((Arc::clone(topic), message.clone()));
                }
                Sent::Full => {
                    self.shared.metrics[worker].handoff_drops.inc();
                    self.doorbells[worker] = true;
                }
                Sent::Gone => {}
            }
        }
        if let Some(broker) = &self.shared.broker {
            broker.publish(Some(topic), message);
        }
    }

    pub(crate) fn max_backpressure(&self) -> usize {
        self.config.max_backpressure
    }

    /// Asks the broker for `topic`'s position and its publications after `after` (`None`: the position
    /// only), for `conn`; the answer comes to the handler's `on_fetched`. `false`: no broker with history,
    /// or its queue is full: no answer will come.
    pub(crate) fn fetch(
        &self,
        conn: ConnId,
        topic: &str,
        after: Option<u64>,
        tag: u64,
        presence: bool,
    ) -> bool {
        let wanted = if presence {
            self.shared.presence.is_some()
        } else {
            self.shared.history.is_some()
        };
        match &self.shared.broker {
            Some(broker) if wanted => broker.fetch(crate::broker::history::FetchRequest {
                worker: self.index,
                conn,
                topic: Arc::from(topic),
                after,
                tag,
                presence,
                fail: false,
            }),
            _ => false,
        }
    }

    /// A publication's way out of this worker: the other workers, the broker, this worker's handler.
    fn hand_on(&mut self, topic: &Arc<str>, message: &SharedMessage) {
        self.hand_off(|| WorkerMessage::Publish {
            topic: Arc::clone(topic),
            message: message.clone(),
        });
        if let Some(broker) = &self.shared.broker {
            broker.publish(Some(topic), message);
        }
        self.published.push((Arc::clone(topic), message.clone()));
    }

    /// Publishes a presence event (join or leave) on `topic` to every worker of this node (`on_published`
    /// with [`SharedMessage::is_event`]): not kept in history, not sent to the broker.
    pub(crate) fn publish_event(&mut self, topic: &str, payload: &[u8]) {
        let message = SharedMessage::encode(MessageKind::Text, payload).into_event();
        let topic: Arc<str> = Arc::from(topic);
        self.hand_off(|| WorkerMessage::Publish {
            topic: Arc::clone(&topic),
            message: message.clone(),
        });
        self.published.push((topic, message));
    }

    /// Frames a message once for every receiver on every worker; with permessage-deflate on and the message
    /// at or above the threshold, also compressed once (at the configured window: a connection that agreed
    /// a narrower one gets the plain frame).
    pub(crate) fn encode_shared(&mut self, kind: MessageKind, payload: &[u8]) -> SharedMessage {
        self.metrics.frames_encoded.inc();
        let deflate = &self.config.compression;
        if deflate.mode == DeflateMode::Off || payload.len() < deflate.threshold {
            return SharedMessage::encode(kind, payload);
        }
        let message = SharedMessage::encode_compressed(
            kind,
            payload,
            &mut self.compressors,
            deflate.max_window_bits,
        );
        if let Some(compressed) = message.compressed_frame() {
            let metrics = &self.metrics.deflate;
            metrics.frames_compressed.inc();
            metrics.bytes[DEFLATE_OUT_PLAIN].add(payload.len() as u64);
            metrics.bytes[DEFLATE_OUT_COMPRESSED].add(compressed.len() as u64);
        } else {
            self.metrics.deflate.not_smaller.inc();
        }
        message
    }

    /// `topic` gained its first subscriber in this worker (`wanted`) or lost its last: with `--broker`,
    /// the node subscribes to it on Redis while any worker wants it. Off the message path.
    pub(crate) fn topic_interest(&self, topic: &str, wanted: bool) {
        if let Some(broker) = &self.shared.broker {
            broker.interest(topic, wanted);
        }
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
        self.deliver_run();
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
        let frame = message.frame_for(conn.reader.deflate());
        let queue = conn.queue.get_or_insert_with(|| self.pool.take_queue());
        queue.push_shared(Arc::clone(frame));
        self.metrics.deliveries.inc();
        self.metrics.messages_out.inc();
        self.metrics.bytes_out.add(frame.len() as u64);
        self.mark_dirty(key);
        true
    }

    /// Queues a shared message to every open connection of this worker (a reference each, no copy),
    /// applying the slow-consumer policy to those over the backpressure cap. Returns what the delivery
    /// found for the sender's fanout budget.
    pub(super) fn deliver_shared(
        &mut self,
        message: &SharedMessage,
        except: Option<(usize, ConnId)>,
    ) -> Fanout {
        self.deliver_run();
        self.deliver_local(|deflate| message.frame_for(deflate), 1, except)
    }

    /// Queues `messages` messages, whose frames for a connection's agreement `frame_for` gives (one
    /// shared buffer), to every open connection of this worker but `except`, as [`Core::deliver_shared`]
    /// describes. Nothing may be held in a run when this runs (it would go out after these).
    fn deliver_local<'m>(
        &mut self,
        frame_for: impl Fn(Negotiated) -> &'m Arc<[u8]>,
        messages: u64,
        except: Option<(usize, ConnId)>,
    ) -> Fanout {
        let skip = except
            .filter(|(worker, _)| *worker == self.index)
            .map(|(_, id)| id);
        let cap = self.config.max_backpressure;
        let policy = self.config.slow_consumer;
        let budget = fanout_budget(&self.config);
        let mut fanout = Fanout::default();
        let mut slow: Vec<usize> = Vec::new();
        let (mut delivered, mut bytes) = (0u64, 0u64);
        let timed = self
            .timing_wanted()
            .then(|| (Instant::now(), thread_cpu_time()));
        for (key, conn) in self.conns.iter_mut() {
            // Event streams (`GET /sse`) carry their handler's topic publications only, never a frame.
            if conn.state != State::Open || conn.has(CLOSE_SENT) || conn.has_fanout(EVENT_STREAM) {
                continue;
            }
            if skip.is_some_and(|id| id.key as usize == key && id.generation == conn.generation) {
                continue;
            }
            if conn.queued_cost() > cap {
                match policy {
                    SlowConsumerPolicy::Drop => {
                        // Every message of a joined run is dropped for this connection.
                        self.metrics.slow_consumer_drops.add(messages);
                    }
                    SlowConsumerPolicy::Close => slow.push(key),
                }
                continue;
            }
            // A slow receiver counts against no sender (until it drains, `Core::receiver_sent`).
            let counts = !conn.has_fanout(SLOW_RECEIVER);
            // The compressed frame for a connection that agreed permessage-deflate, else the plain one.
            let frame = frame_for(conn.reader.deflate());
            let queue = conn.queue.get_or_insert_with(|| self.pool.take_queue());
            queue.push_shared(Arc::clone(frame));
            delivered += 1;
            bytes += frame.len() as u64;
            fanout.receivers += u32::from(counts);
            let cost = queue.queued_cost();
            if counts && cost > budget {
                fanout.congested += 1;
                if fanout.least_congested.is_none_or(|(least, _)| cost < least) {
                    let id = ConnId {
                        key: key as u32,
                        generation: conn.generation,
                    };
                    fanout.least_congested = Some((cost, id));
                }
            }
            if timed.is_some() {
                conn.set_fanout(TIMED_DELIVERY);
            }
            if !conn.has(DIRTY) {
                conn.set(DIRTY);
                self.dirty.push(key as u32);
            }
        }
        if let Some((arrived, cpu_at_arrival)) = timed {
            self.fanout_timing
                .start(arrived, cpu_at_arrival, delivered as u32);
        }
        self.metrics.deliveries.add(delivered * messages);
        self.metrics.messages_out.add(delivered * messages);
        self.metrics.bytes_out.add(bytes);
        for key in slow {
            self.metrics.slow_consumer_closes.inc();
            self.send_close(key, CloseCode::POLICY, "slow consumer");
            self.leave_open(key, Some(CloseCode::POLICY));
        }
        fanout
    }

    /// Forgets what the last broadcast found (before a connection's input is read).
    pub(super) fn forget_fanout(&mut self) {
        self.deliver_run();
        self.sender_budget.last = None;
        self.sender_budget.run.reading = true;
    }

    /// After a connection's receive buffer was read: if it broadcast and its last broadcast found most of
    /// the receivers that count (those not marked slow) over the fanout budget, its reads are paused like
    /// [`Core::check_backpressure`] pauses a reader (the multishot receive is cancelled; completions
    /// already waiting are still read) until the least full of those receivers drains
    /// ([`Core::receiver_sent`]) or [`Core::review_paused_senders`] resumes it. A connection already
    /// paused (as a sender, or as a reader whose own queue is full) is left as it is.
    pub(super) fn check_sender_budget(&mut self, key: usize) {
        self.deliver_run();
        self.sender_budget.run.reading = false;
        let Some(fanout) = self.sender_budget.last.take() else {
            return;
        };
        if self.config.sender_budget == SenderBudgetPolicy::Off {
            return;
        }
        let Some((_, blocker)) = fanout.least_congested else {
            return;
        };
        if fanout.congested * 2 <= fanout.receivers {
            return;
        }
        let recv_ud = self.ud(key, Op::Recv);
        let conn = &mut self.conns[key];
        if conn.has(RECV_PAUSED) || conn.has(ENDING) || conn.state != State::Open {
            return;
        }
        conn.set(RECV_PAUSED);
        conn.set_fanout(SENDER_PAUSED);
        let id = ConnId {
            key: key as u32,
            generation: conn.generation,
        };
        if conn.has(RECV_ARMED) {
            self.ring.cancel(
                recv_ud,
                UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
            );
        }
        self.metrics.sender_pauses.inc();
        let budget = &mut self.sender_budget;
        budget.paused.push(id);
        budget.blocker = Some(blocker);
        budget.paused_at.get_or_insert_with(Instant::now);
    }

    /// A send to this connection completed: once it has drained to half the fanout budget it is no longer
    /// a slow receiver, and if it is the receiver the paused senders wait for, they resume.
    pub(super) fn receiver_sent(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.has_fanout(TIMED_DELIVERY) && conn.queued_bytes() == 0 {
            conn.clear_fanout(TIMED_DELIVERY);
            self.timed_receiver_drained();
        }
        let conn = &mut self.conns[key];
        if conn.queued_cost() > fanout_budget(&self.config) / 2 {
            return;
        }
        conn.clear_fanout(SLOW_RECEIVER);
        let generation = conn.generation;
        if self
            .sender_budget
            .blocker
            .is_some_and(|id| id.key as usize == key && id.generation == generation)
        {
            self.resume_senders();
        }
    }

    /// On every tick (and doorbell): resumes the paused senders if the receiver they wait for is gone or
    /// drained without a send completing here, or if they waited [`MAX_SENDER_PAUSE`]; then every
    /// receiver still over half the fanout budget is marked slow (it did not drain within the wait).
    pub(super) fn review_paused_senders(&mut self) {
        let budget = &self.sender_budget;
        let Some(blocker) = budget.blocker else {
            return;
        };
        if !self.receiver_drained(blocker) {
            if budget
                .paused_at
                .is_none_or(|at| at.elapsed() < MAX_SENDER_PAUSE)
            {
                return;
            }
            self.mark_slow_receivers();
        }
        self.resume_senders();
    }

    /// Marks every open receiver over half the fanout budget slow (counted once per mark): it no longer
    /// counts against any sender's fanout until it drains ([`Core::receiver_sent`]). One pass over the
    /// worker's connections, at most once per [`MAX_SENDER_PAUSE`].
    fn mark_slow_receivers(&mut self) {
        let drained = fanout_budget(&self.config) / 2;
        let mut marked = 0;
        for (_, conn) in self.conns.iter_mut() {
            if conn.state == State::Open
                && !conn.has_fanout(SLOW_RECEIVER)
                && conn.queued_cost() > drained
            {
                conn.set_fanout(SLOW_RECEIVER);
                marked += 1;
            }
        }
        self.metrics.slow_receivers.add(marked);
    }

    /// Resumes every paused sender (its reads, unless its own queue keeps it paused as a reader).
    fn resume_senders(&mut self) {
        let mut paused = std::mem::take(&mut self.sender_budget.paused);
        for id in paused.drain(..) {
            let key = id.key as usize;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.generation != id.generation || !conn.has_fanout(SENDER_PAUSED) {
                continue;
            }
            conn.clear_fanout(SENDER_PAUSED);
            // Still paused as a reader while its own queue is over half the cap (its sends resume it).
            if conn.queued_cost() <= self.config.max_backpressure / 2 {
                conn.clear(RECV_PAUSED);
            }
            if conn.has_fanout(HOLDS_INPUT) {
                // What it kept is read first, at the end of this batch; then it receives again.
                self.sender_budget.resumed.push(id);
            } else if !conn.has(RECV_PAUSED | RECV_ARMED | ENDING) {
                self.arm_recv(key);
            }
        }
        let budget = &mut self.sender_budget;
        budget.paused = paused;
        budget.blocker = None;
        budget.paused_at = None;
    }

    /// Whether a receiver has drained to half the fanout budget, or is no longer open.
    fn receiver_drained(&self, id: ConnId) -> bool {
        self.conns
            .get(id.key as usize)
            .filter(|conn| conn.generation == id.generation && conn.state == State::Open)
            .is_none_or(|conn| conn.queued_cost() <= fanout_budget(&self.config) / 2)
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

impl Core {
    /// Whether the delivery about to be made is timed: this module logs at debug level, the worker holds
    /// at least [`TIMED_FANOUT_MIN`] connections, and no timed delivery is still draining (one given up
    /// after [`TIMED_FANOUT_GIVE_UP`] is reported incomplete and its marks cleared).
    fn timing_wanted(&mut self) -> bool {
        if self.conns.len() < self.fanout_timing.min_receivers
            || !tracing::enabled!(tracing::Level::DEBUG)
        {
            return false;
        }
        timing_epoch();
        let Some(current) = &self.fanout_timing.current else {
            return true;
        };
        if current.arrived.elapsed() < TIMED_FANOUT_GIVE_UP {
            return false;
        }
        self.report_timed_fanout();
        for (_, conn) in self.conns.iter_mut() {
            conn.clear_fanout(TIMED_DELIVERY);
        }
        true
    }

    /// The batch's sends were handed to the ring (after its flush): the timed delivery's are.
    pub(super) fn fanout_flushed(&mut self) {
        if let Some(timed) = self.fanout_timing.current.as_mut() {
            timed.flushed.get_or_insert_with(Instant::now);
        }
    }

    /// One receiver of the timed delivery has drained its queue; the last one ends the timing.
    fn timed_receiver_drained(&mut self) {
        let Some(timed) = self.fanout_timing.current.as_mut() else {
            return;
        };
        timed.pending = timed.pending.saturating_sub(1);
        if timed.pending == 0 {
            self.report_timed_fanout();
        }
    }

    /// The `timed fanout` line of the current timed delivery (complete, or given up), which ends it.
    fn report_timed_fanout(&mut self) {
        let Some(timed) = self.fanout_timing.current.take() else {
            return;
        };
        let cpu = thread_cpu_time().saturating_sub(timed.cpu_at_arrival);
        let epoch = timing_epoch();
        let us = |at: Instant| at.saturating_duration_since(epoch).as_micros() as u64;
        tracing::debug!(
            worker = self.index,
            receivers = timed.receivers,
            drained = timed.receivers - timed.pending,
            arrived_us = us(timed.arrived),
            flushed_us = timed.flushed.map_or(0, us),
            done_us = us(Instant::now()),
            cpu_us = cpu.as_micros() as u64,
            "timed fanout"
        );
    }
}

/// Deliveries to at least this many connections of a worker are timed when this module logs at debug
/// level (see the module doc).
pub(super) const TIMED_FANOUT_MIN: usize = 1000;

/// A timed delivery whose receivers have not all drained after this long (some left, or are slow) is
/// reported with the count that did when the next one begins.
const TIMED_FANOUT_GIVE_UP: Duration = Duration::from_secs(10);

/// The instant the `timed fanout` lines of every worker count from.
fn timing_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The delivery a worker is timing (at most one at a time).
pub(super) struct FanoutTiming {
    current: Option<TimedFanout>,
    /// Connections a worker holds from which its deliveries are timed ([`TIMED_FANOUT_MIN`]).
    min_receivers: usize,
}

impl Default for FanoutTiming {
    fn default() -> Self {
        FanoutTiming {
            current: None,
            min_receivers: TIMED_FANOUT_MIN,
        }
    }
}

impl FanoutTiming {
    fn start(&mut self, arrived: Instant, cpu_at_arrival: Duration, receivers: u32) {
        if receivers == 0 {
            return;
        }
        self.current = Some(TimedFanout {
            arrived,
            cpu_at_arrival,
            flushed: None,
            receivers,
            pending: receivers,
        });
    }
}

struct TimedFanout {
    /// When this worker began the delivery.
    arrived: Instant,
    /// The worker thread's CPU time then.
    cpu_at_arrival: Duration,
    /// When the batch that queued it handed its sends to the ring.
    flushed: Option<Instant>,
    receivers: u32,
    /// Receivers whose queue has not drained yet.
    pending: u32,
}

/// The longest a sender stays paused for its fanout when the receiver it waits for does not drain; the
/// receivers still over half the budget are then slow receivers, left to the slow-consumer policy: they
/// pause no sender again until they drain.
pub(super) const MAX_SENDER_PAUSE: Duration = Duration::from_millis(500);

/// Queued memory (as `--max-backpressure` counts it) past which a receiver counts against the fanout of
/// the connections that broadcast to it: half the cap, so that senders are paused well before their
/// readers reach the slow-consumer policy.
pub(super) fn fanout_budget(config: &ServerConfig) -> usize {
    config.max_backpressure / 2
}

/// What one local delivery of a broadcast found: the receivers, how many of them were over the fanout
/// budget once it was queued, and the least full of those (its cost and id).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Fanout {
    receivers: u32,
    congested: u32,
    least_congested: Option<(usize, ConnId)>,
}

/// The fanout budget of this worker's broadcasting connections. A sender's fanout is measured where it is
/// delivered in this worker: the receivers its broadcast found over [`fanout_budget`]. Its broadcast also
/// reaches the other workers' queues, which this worker does not see; their receivers are covered by the
/// slow-consumer policy alone (a local estimate: with one worker, or clients spread evenly over workers,
/// this worker's share stands for the rest).
#[derive(Default)]
pub(super) struct SenderBudget {
    /// The last broadcast delivered here during the receive buffer being read (taken after it).
    last: Option<Fanout>,
    /// Connections paused for their fanout (`SENDER_PAUSED`), resumed together; capacity kept.
    paused: Vec<ConnId>,
    /// The receiver whose drain resumes them: the least full of the receivers over budget at the last
    /// pause.
    blocker: Option<ConnId>,
    /// When the first of the paused senders was paused.
    paused_at: Option<Instant>,
    /// Resumed senders holding input received while paused, read at the end of the batch; capacity kept.
    resumed: Vec<ConnId>,
    /// The broadcasts made while the current receive buffer is read, not yet delivered here.
    run: BroadcastRun,
}

/// Frames larger than this are delivered at once, never joined (joining copies them once).
const RUN_FRAME_MAX: usize = 4 * 1024;
/// A run's joined frames stay within this many bytes (a longer one is delivered and a new one begun).
const RUN_MAX_BYTES: usize = 64 * 1024;

/// The broadcasts a connection's input makes while one receive buffer of it is read (a publisher's
/// buffer holds many small messages), held and delivered here together when the buffer is read, so that
/// each receiver queues one chunk for all of them instead of one per message: one reference count, one
/// entry and one iovec per receiver per run, and a plain `send`. Each message is still encoded once and
/// handed to the other workers and the broker on its own; only this worker's delivery is joined.
///
/// Order is kept: the run is delivered ([`Core::deliver_run`]) before anything else is queued to any
/// connection (a frame, an HTTP answer, a shared message, another worker's delivery), before a queue's
/// cost is checked for backpressure, before the batch's sends are submitted, and when the buffer is
/// read. Only plain frames (no compressed form) of at most [`RUN_FRAME_MAX`] bytes, with the same
/// excepted sender, are joined; a broadcast made outside an input (a handler's `on_close`, say) is
/// delivered at once, so that no connection opened or released later in the batch is affected.
#[derive(Default)]
pub(super) struct BroadcastRun {
    /// Whether a connection's receive buffer is being read (between [`Core::forget_fanout`] and
    /// [`Core::check_sender_budget`]).
    reading: bool,
    /// Messages held.
    count: u32,
    /// The connection they are not delivered to.
    except: Option<(usize, ConnId)>,
    /// The first message's frame, delivered as it is when the run holds only it.
    first: Option<Arc<[u8]>>,
    /// The frames joined in order (capacity kept up to [`RUN_MAX_BYTES`]).
    joined: Vec<u8>,
}

/// After a doorbell's `MSG_RING` completed with `result` on its `attempt`: the attempt to ring again with,
/// or `None` (it went through, or it failed twice and the receiving worker's tick drains its inbox).
fn doorbell_retry(attempt: u32, result: i32) -> Option<u32> {
    (result < 0 && attempt == 0).then_some(1)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open_connection, test_core};
    use super::*;
    use crate::protocol::frame::OpCode;
    use std::sync::Mutex;

    /// What `run` logs at debug level, as text.
    fn debug_lines(run: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("capture").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8(capture.0.lock().expect("capture").clone());
        text.expect("utf-8")
    }

    /// Sends everything queued to `key` as a send completion would, then tells the fanout.
    fn drain(core: &mut Core, key: usize) {
        let queue = core.conns[key].queue.as_mut().expect("a queue");
        let queued = queue.queued_bytes();
        queue.complete(queued, &mut core.pool);
        core.receiver_sent(key);
    }

    #[test]
    fn a_timed_fanout_is_reported_once_its_last_receiver_drained() {
        let mut core = test_core();
        let keys: Vec<usize> = (0..3).map(|i| open_connection(&mut core, i)).collect();
        core.fanout_timing.min_receivers = 3;
        let message = SharedMessage::encode(MessageKind::Text, b"to everyone");
        let lines = debug_lines(|| {
            core.deliver_shared(&message, None);
            assert!(keys
                .iter()
                .all(|&key| core.conns[key].has_fanout(TIMED_DELIVERY)));
            core.fanout_flushed();
            drain(&mut core, keys[0]);
            drain(&mut core, keys[1]);
            assert!(core.fanout_timing.current.is_some(), "one receiver left");
            drain(&mut core, keys[2]);
            assert!(core.fanout_timing.current.is_none());
        });
        let timed: Vec<&str> = lines
            .lines()
            .filter(|l| l.contains("timed fanout"))
            .collect();
        assert_eq!(timed.len(), 1, "{lines}");
        for field in [
            "worker=0",
            "receivers=3",
            "drained=3",
            "flushed_us=",
            "cpu_us=",
        ] {
            assert!(timed[0].contains(field), "{field} in {}", timed[0]);
        }
        assert!(keys
            .iter()
            .all(|&key| !core.conns[key].has_fanout(TIMED_DELIVERY)));
    }

    #[test]
    fn nothing_is_timed_below_debug_level_or_below_the_minimum() {
        let mut core = test_core();
        let keys: Vec<usize> = (0..3).map(|i| open_connection(&mut core, i)).collect();
        let message = SharedMessage::encode(MessageKind::Text, b"to everyone");
        // Debug level, but fewer connections than the minimum.
        let lines = debug_lines(|| {
            core.deliver_shared(&message, None);
        });
        assert!(!lines.contains("timed fanout"));
        // The minimum met, but no subscriber at debug level.
        core.fanout_timing.min_receivers = 3;
        core.deliver_shared(&message, None);
        assert!(core.fanout_timing.current.is_none());
        assert!(keys
            .iter()
            .all(|&key| !core.conns[key].has_fanout(TIMED_DELIVERY)));
    }

    fn id_of(core: &Core, key: usize) -> ConnId {
        ConnId {
            key: key as u32,
            generation: core.conns[key].generation,
        }
    }

    /// The queued chunks of `key`, in order, each as its bytes (the queue is emptied).
    fn chunks_of(core: &mut Core, key: usize) -> Vec<Vec<u8>> {
        let queue = core.conns[key].queue.as_mut().expect("a queue");
        let mut chunks = Vec::new();
        while let Some(front) = queue.front() {
            let chunk = front.to_vec();
            queue.complete(chunk.len(), &mut core.pool);
            chunks.push(chunk);
        }
        chunks
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        SharedMessage::encode(MessageKind::Binary, payload)
            .plain_frame()
            .to_vec()
    }

    #[test]
    fn broadcasts_read_from_one_input_reach_each_receiver_as_one_chunk() {
        let mut core = test_core();
        let sender = open_connection(&mut core, 0);
        let receivers: Vec<usize> = (1..4).map(|i| open_connection(&mut core, i)).collect();
        let from = id_of(&core, sender);
        core.forget_fanout();
        for payload in [&b"one"[..], b"two", b"three"] {
            core.broadcast(MessageKind::Binary, payload, Some(from));
        }
        core.check_sender_budget(sender);
        let joined = [frame(b"one"), frame(b"two"), frame(b"three")].concat();
        for &key in &receivers {
            assert_eq!(
                chunks_of(&mut core, key),
                vec![joined.clone()],
                "receiver {key}"
            );
        }
        assert!(
            core.conns[sender].queue.is_none(),
            "the sender gets none of them"
        );
        assert_eq!(
            core.metrics.deliveries.get(),
            9,
            "deliveries count messages"
        );
        assert_eq!(
            core.metrics.frames_encoded.get(),
            3,
            "each message encoded once"
        );
    }

    #[test]
    fn a_frame_queued_between_broadcasts_keeps_its_place() {
        let mut core = test_core();
        let sender = open_connection(&mut core, 0);
        let receiver = open_connection(&mut core, 1);
        let from = id_of(&core, sender);
        core.forget_fanout();
        core.broadcast(MessageKind::Binary, b"first", Some(from));
        core.queue_frame(receiver, OpCode::Binary, b"direct");
        core.broadcast(MessageKind::Binary, b"second", Some(from));
        core.broadcast(MessageKind::Binary, b"third", Some(from));
        core.check_sender_budget(sender);
        let bytes = chunks_of(&mut core, receiver).concat();
        let expected = [
            frame(b"first"),
            frame(b"direct"),
            frame(b"second"),
            frame(b"third"),
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_broadcast_outside_an_input_or_too_large_to_join_is_delivered_at_once() {
        let mut core = test_core();
        let sender = open_connection(&mut core, 0);
        let receiver = open_connection(&mut core, 1);
        let from = id_of(&core, sender);
        core.broadcast(MessageKind::Binary, b"outside", Some(from));
        assert_eq!(chunks_of(&mut core, receiver), vec![frame(b"outside")]);
        core.forget_fanout();
        let large = vec![7u8; RUN_FRAME_MAX + 1];
        core.broadcast(MessageKind::Binary, &large, Some(from));
        assert_eq!(chunks_of(&mut core, receiver), vec![frame(&large)]);
        core.check_sender_budget(sender);
    }

    /// A slow consumer under the drop policy loses a joined run whole: every message of it is counted.
    #[test]
    fn a_run_dropped_for_a_slow_consumer_counts_each_message() {
        let mut core = test_core();
        core.config = Arc::new(ServerConfig {
            slow_consumer: SlowConsumerPolicy::Drop,
            max_backpressure: 1,
            ..ServerConfig::default()
        });
        let sender = open_connection(&mut core, 0);
        let receiver = open_connection(&mut core, 1);
        let from = id_of(&core, sender);
        // Outside an input: delivered at once, and the receiver's queue is over its cap from then on.
        core.broadcast(MessageKind::Binary, b"first", Some(from));
        assert!(core.conns[receiver].queued_cost() > 1);
        core.forget_fanout();
        for payload in [&b"one"[..], b"two", b"three"] {
            core.broadcast(MessageKind::Binary, payload, Some(from));
        }
        core.check_sender_budget(sender);
        assert_eq!(core.metrics.slow_consumer_drops.get(), 3);
        assert_eq!(chunks_of(&mut core, receiver), vec![frame(b"first")]);
    }

    #[test]
    fn a_failed_doorbell_is_rung_once_more_never_in_a_loop() {
        assert_eq!(doorbell_retry(0, 0), None);
        assert_eq!(doorbell_retry(0, -libc::EOVERFLOW), Some(1));
        assert_eq!(doorbell_retry(1, -libc::EOVERFLOW), None);
        assert_eq!(doorbell_retry(1, 0), None);
    }
}
