//! Send queues: the bytes queued for one connection, sent as one vectored `sendmsg` at a time, and the
//! worker's pool of output buffers and queues.
//!
//! A queue holds chunks: owned buffers (taken from the [`BufferPool`], small frames coalesced into one)
//! and shared, reference-counted buffers (one broadcast frame referenced by many queues, never copied).
//! Lifetime rule: while a send is in flight, the chunks it covers, the iovec array and the `msghdr` are
//! neither freed, moved nor modified (new bytes only go to chunks after them); a queue dropped while a send
//! is in flight leaks them rather than free memory the kernel may still read. A send is in flight from
//! [`Ring::send_queue`](super::Ring::send_queue) until [`SendQueue::complete_send`] is given the
//! completion that ends it (the ring stamps each send with its key and the count of send ends so far, and
//! only an end of that key numbered above the stamp is accepted: the send's own, or one after it);
//! nothing else ends it: [`SendQueue::complete`] and [`SendQueue::clear`] refuse a queue in flight.
//! Nothing here allocates in steady state: buffers and queues come back to the pool.
//!
//! Cost rule: a queue's cost ([`SendQueue::queued_cost`], what the send cap counts) is the memory it holds,
//! not its payload: each chunk's entry in the chunk list, plus an owned buffer's bytes, plus a shared
//! frame's whole allocation. An owned buffer is charged its length, not its capacity: buffers come from
//! the pool with whatever capacity an earlier, larger write left (bounded by the pool: at most
//! `POOL_MAX_ITEMS` of at most `POOL_MAX_CAPACITY`), and a queue whose send is in flight starts a new owned
//! chunk on every flush, so charging capacity made a TLS reader a few records behind look like megabytes
//! (readers that kept up were closed as slow consumers under load). A shared frame is charged in full to every queue that holds it: a slow queue
//! alone keeps it alive once the others have sent it, so the sum of the caps bounds the memory, and a
//! queue's cost does not change while others drain. A queue that drains gives back its chunk list's
//! capacity (a list that grew to hundreds of thousands of entries for tiny frames), and the pool reports
//! what was freed so the worker can hand it back to the system once quiet.

use std::collections::VecDeque;
use std::sync::Arc;

use super::ring::{Completion, Handover};

/// Most chunks covered by one `sendmsg`.
pub const MAX_IOV: usize = 64;
/// Small owned frames are appended to the last owned chunk while it stays below this size.
const COALESCE_LIMIT: usize = 64 * 1024;
/// Buffers larger than this are freed instead of pooled.
const POOL_MAX_CAPACITY: usize = 256 * 1024;
/// At most this many free buffers and queues are kept while the worker is busy.
const POOL_MAX_ITEMS: usize = 4096;
/// Free buffers and queues kept once the worker has been quiet for a while ([`BufferPool::shrink_if_quiet`]).
const POOL_QUIET_ITEMS: usize = 64;
/// What one entry of a queue's chunk list costs.
pub const CHUNK_ENTRY_COST: usize = std::mem::size_of::<Chunk>();
/// What a shared frame's allocation holds besides its bytes (the strong and weak counts).
pub const SHARED_HEADER_COST: usize = 2 * std::mem::size_of::<usize>();
/// A drained queue keeps a chunk list of at most this many entries; the rest of its capacity is freed.
const QUEUE_KEEP_CHUNKS: usize = 256;
/// A drained queue may always keep this many entries (a queue that never holds more never reallocates).
const QUEUE_MIN_CHUNKS: usize = 8;
/// A drained queue whose chunk list is more than this many times what its last use needed is cut back to
/// that need (so one burst does not leave every queue at its burst's size, and steady bursts of similar
/// sizes do not shrink and regrow the list each time).
const QUEUE_SLACK: usize = 4;
/// Uses in a row without a vectored send after which a queue gives back its iovec array.
const IOV_IDLE_USES: u8 = 4;
/// Bytes freed (chunk lists, buffers over the caps, frames dropped unsent) after which handing memory back
/// to the system is worth it.
const TRIM_WORTH_BYTES: usize = 1 << 20;

/// Queued bytes.
pub enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
        }
    }

    /// The memory this chunk holds, its entry in the chunk list included (see the cost rule above).
    fn cost(&self) -> usize {
        CHUNK_ENTRY_COST
            + match self {
                Chunk::Owned(v) => v.len(),
                Chunk::Shared(a) => a.len() + SHARED_HEADER_COST,
            }
    }
}

/// What [`SendQueue::prepare_send`] asks to submit.
pub(super) enum SendOp {
    /// One contiguous range: a plain `send` (no `msghdr`, no iovec array to import).
    Single(*const u8, usize),
    /// Several chunks: a vectored `sendmsg` of this `msghdr`.
    Vectored(*const libc::msghdr),
}

/// The `msghdr` and its iovec array, boxed so that moving the queue never moves them. Allocated only
/// the first time a queue sends more than one chunk at once.
struct IoVecs {
    iov: [libc::iovec; MAX_IOV],
    msg: libc::msghdr,
}

/// The send queue of one connection.
pub struct SendQueue {
    chunks: VecDeque<Chunk>,
    /// The queue's own small chunk list ([`QUEUE_MIN_CHUNKS`] entries, allocated with the queue), set
    /// aside (empty) while a longer list is in use, else empty without capacity. A burst's longer list
    /// is a separate allocation that goes back whole when the burst is over, so no small live object is
    /// left inside the memory the burst took and the allocator can hand all of it back.
    small: VecDeque<Chunk>,
    /// Bytes of `chunks[0]` already sent.
    head_offset: usize,
    /// Bytes queued and not yet sent.
    queued_bytes: usize,
    /// Sum of the chunks' [`Chunk::cost`].
    cost: usize,
    /// Number of leading chunks covered by the send in flight (0: none in flight).
    in_flight: usize,
    /// The send in flight: which ring submitted it, for which key, the ring's send ends before it and the
    /// bytes it covers.
    send: SendStamp,
    io: Option<Box<IoVecs>>,
    /// The most chunks queued at once since the queue last drained (what this use needed).
    peak_chunks: usize,
    /// Drained uses in a row without a vectored send (the iovec array goes after [`IOV_IDLE_USES`]).
    uses_without_iov: u8,
    /// Whether this use (since the queue last drained) prepared a vectored send.
    vectored: bool,
}

/// Which send a queue has in flight (meaningful while `in_flight > 0`).
#[derive(Clone, Copy, Default)]
struct SendStamp {
    ring: u64,
    key: u32,
    /// The ring's count of send ends handed over when this send was submitted.
    after: u64,
    bytes: usize,
}

impl Default for SendQueue {
    fn default() -> Self {
        SendQueue::new()
    }
}

impl SendQueue {
    pub fn new() -> SendQueue {
        SendQueue {
            chunks: VecDeque::with_capacity(QUEUE_MIN_CHUNKS),
            small: VecDeque::new(),
            head_offset: 0,
            queued_bytes: 0,
            cost: 0,
            in_flight: 0,
            send: SendStamp::default(),
            io: None,
            peak_chunks: 0,
            uses_without_iov: 0,
            vectored: false,
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The memory this queue holds (what the send cap counts): for each chunk its entry in the chunk list,
    /// plus an owned buffer's bytes or a shared frame's whole allocation (see the module's cost rule).
    pub fn queued_cost(&self) -> usize {
        self.cost
    }

    pub fn is_empty(&self) -> bool {
        self.queued_bytes == 0
    }

    pub fn send_in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// The unsent bytes of the head chunk (for a queue whose bytes are consumed by [`SendQueue::complete`]
    /// without a send, e.g. plaintext to encrypt).
    pub fn front(&self) -> Option<&[u8]> {
        if self.queued_bytes == 0 {
            return None;
        }
        self.chunks
            .iter()
            .enumerate()
            .map(|(i, c)| &c.bytes()[if i == 0 { self.head_offset } else { 0 }..])
            .find(|b| !b.is_empty())
    }

    /// Appends bytes written by `write` to an owned buffer (the last one if it is not in flight and has
    /// room, else a pooled one). `size_hint` is how many bytes `write` will append.
    pub fn push_owned(
        &mut self,
        pool: &mut BufferPool,
        size_hint: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let can_coalesce = self.chunks.len() > self.in_flight
            && matches!(self.chunks.back(), Some(Chunk::Owned(v)) if v.len() + size_hint <= COALESCE_LIMIT);
        if !can_coalesce {
            let mut buf = pool.take_buffer();
            buf.reserve(size_hint);
            self.cost += CHUNK_ENTRY_COST;
            self.make_room();
            self.chunks.push_back(Chunk::Owned(buf));
            self.peak_chunks = self.peak_chunks.max(self.chunks.len());
        }
        let Some(Chunk::Owned(buf)) = self.chunks.back_mut() else {
            unreachable!("an owned chunk was pushed")
        };
        let before = buf.len();
        write(buf);
        self.queued_bytes += buf.len() - before;
        self.cost += buf.len() - before;
    }

    /// Appends a shared buffer (a reference, no copy).
    pub fn push_shared(&mut self, bytes: Arc<[u8]>) {
        if bytes.is_empty() {
            return;
        }
        self.queued_bytes += bytes.len();
        let chunk = Chunk::Shared(bytes);
        self.cost += chunk.cost();
        self.make_room();
        self.chunks.push_back(chunk);
        self.peak_chunks = self.peak_chunks.max(self.chunks.len());
    }

    /// Before a push: when the queue's own small list is full, moves its chunks to a longer list of their
    /// own and sets the small one aside (moving a chunk moves its handle, never its bytes, so a send in
    /// flight is not affected).
    fn make_room(&mut self) {
        if self.chunks.len() < self.chunks.capacity() || self.small.capacity() > 0 {
            return;
        }
        let mut longer = VecDeque::with_capacity(2 * self.chunks.capacity().max(QUEUE_MIN_CHUNKS));
        longer.extend(self.chunks.drain(..));
        self.small = std::mem::replace(&mut self.chunks, longer);
    }

    /// Prepares the next send and marks the chunks it covers in flight as a send of `key` on ring `ring`: a
    /// plain send of the head chunk when only one chunk is queued, else a vectored send of up to
    /// [`MAX_IOV`] chunks. Returns `None` if nothing is queued or a send is already in flight. For
    /// [`Ring::send_queue`](super::Ring::send_queue) (and a simulated ring) only: what it returns must be
    /// submitted, and only an end of `ring` and `key` numbered above `after` ends it (`SendsInFlight`).
    pub(super) fn prepare_send(&mut self, ring: u64, key: u32, after: u64) -> Option<SendOp> {
        if self.in_flight > 0 || self.queued_bytes == 0 {
            return None;
        }
        if self.chunks.len() == 1 {
            let bytes = &self.chunks[0].bytes()[self.head_offset..];
            self.in_flight = 1;
            self.send = SendStamp {
                ring,
                key,
                after,
                bytes: bytes.len(),
            };
            return Some(SendOp::Single(bytes.as_ptr(), bytes.len()));
        }
        self.vectored = true;
        let io = self.io.get_or_insert_with(|| {
            Box::new(IoVecs {
                // SAFETY: `iovec` and `msghdr` are plain C structs for which all-zero bytes are a valid
                // value (null pointers, zero lengths).
                iov: unsafe { std::mem::zeroed() },
                // SAFETY: as above.
                msg: unsafe { std::mem::zeroed() },
            })
        });
        let (mut count, mut total) = (0, 0);
        for (i, chunk) in self.chunks.iter().enumerate().take(MAX_IOV) {
            let bytes = chunk.bytes();
            let skip = if i == 0 { self.head_offset } else { 0 };
            if bytes.len() == skip {
                continue;
            }
            io.iov[count] = libc::iovec {
                iov_base: bytes[skip..].as_ptr() as *mut libc::c_void,
                iov_len: bytes.len() - skip,
            };
            count += 1;
            total += bytes.len() - skip;
        }
        self.in_flight = self.chunks.len().min(MAX_IOV);
        self.send = SendStamp {
            ring,
            key,
            after,
            bytes: total,
        };
        let iov_ptr = io.iov.as_mut_ptr();
        let msg = &mut io.msg;
        msg.msg_iov = iov_ptr;
        msg.msg_iovlen = count as _;
        Some(SendOp::Vectored(msg as *const libc::msghdr))
    }

    /// Ends the send in flight with its completion: `completion.result` bytes went out (none on an
    /// error; never more than the send covered). Fully sent chunks go back to the pool; a partly sent one
    /// stays at the head with its offset.
    ///
    /// # Panics
    /// If `completion` is not the one that ends this queue's send in flight (another send's, another
    /// ring's, one already used, or none is in flight): freeing on it could free bytes the kernel reads.
    ///
    /// A number of bytes is not proof that the kernel is done:
    ///
    /// ```compile_fail
    /// fn stray(queue: &mut ringws::reactor::SendQueue, pool: &mut ringws::reactor::BufferPool) {
    ///     queue.complete_send(5, pool);
    /// }
    /// ```
    pub fn complete_send(&mut self, completion: &mut Completion, pool: &mut BufferPool) {
        let ends_ours = self.in_flight > 0
            && matches!(completion.handover, Handover::Send { ring, key, end }
                if ring == self.send.ring && key == self.send.key && end > self.send.after);
        assert!(
            ends_ours,
            "not the completion of this queue's send in flight: {completion:?}"
        );
        completion.handover = Handover::None;
        let sent = (completion.result.max(0) as usize).min(self.send.bytes);
        self.in_flight = 0;
        self.send = SendStamp::default();
        self.consume(sent, pool);
    }

    /// Consumes `n` bytes from the head without a send (plaintext handed to the encryption, tests).
    ///
    /// # Panics
    /// If a send is in flight: only its completion ([`SendQueue::complete_send`]) ends it.
    pub fn complete(&mut self, n: usize, pool: &mut BufferPool) {
        assert_eq!(
            self.in_flight, 0,
            "bytes consumed from a queue with a send in flight"
        );
        self.consume(n, pool);
    }

    /// Removes `sent` bytes from the head (nothing in flight).
    fn consume(&mut self, sent: usize, pool: &mut BufferPool) {
        let mut remaining = sent.min(self.queued_bytes);
        self.queued_bytes -= remaining;
        while remaining > 0 {
            let Some(head) = self.chunks.front() else {
                break;
            };
            let left = head.bytes().len() - self.head_offset;
            if remaining >= left {
                remaining -= left;
                self.head_offset = 0;
                self.pop_front(pool);
            } else {
                self.head_offset += remaining;
                remaining = 0;
            }
        }
        // Drop fully sent empty chunks (a zero-length owned buffer).
        while self.head_offset == 0
            && matches!(self.chunks.front(), Some(c) if c.bytes().is_empty())
        {
            self.pop_front(pool);
        }
        if self.chunks.is_empty() {
            self.release_spare_entries(pool);
        }
    }

    /// The bytes the send in flight covers, in order (the simulated ring keeps a copy of what it "sends").
    #[cfg(feature = "sim-ring")]
    pub(super) fn in_flight_bytes(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks
            .iter()
            .take(self.in_flight)
            .enumerate()
            .map(|(i, c)| &c.bytes()[if i == 0 { self.head_offset } else { 0 }..])
    }

    /// Drops everything queued.
    ///
    /// # Panics
    /// If a send is in flight (the kernel may still read its chunks).
    pub fn clear(&mut self, pool: &mut BufferPool) {
        assert_eq!(self.in_flight, 0, "clearing a queue with a send in flight");
        let dropped = self.cost;
        while !self.chunks.is_empty() {
            self.pop_front(pool);
        }
        pool.freed_bytes += dropped;
        self.head_offset = 0;
        self.queued_bytes = 0;
        self.release_spare_entries(pool);
    }

    /// Removes the head chunk (fully sent or dropped), its buffer back to the pool.
    fn pop_front(&mut self, pool: &mut BufferPool) {
        let Some(chunk) = self.chunks.pop_front() else {
            return;
        };
        self.cost -= chunk.cost();
        if let Chunk::Owned(buf) = chunk {
            pool.give_buffer(buf);
        }
    }

    /// Ends a use of a drained queue: cuts its chunk list back to [`QUEUE_KEEP_CHUNKS`] entries (it grows
    /// to one entry per queued frame, hundreds of thousands for tiny frames to a slow reader), and further
    /// to what this use needed when the list is [`QUEUE_SLACK`] times that; gives back the iovec array
    /// after [`IOV_IDLE_USES`] uses without a vectored send. One burst (every subscriber's queue grown
    /// while a worker was held up) would otherwise leave every queue, pooled or not, at the burst's size
    /// for as long as output keeps flowing, since the pool is never quiet then. Tells the pool what it
    /// freed.
    fn release_spare_entries(&mut self, pool: &mut BufferPool) {
        if self.peak_chunks == 0 {
            // Nothing queued since the last release (a drained queue given back to the pool).
            return;
        }
        let capacity = self.chunks.capacity();
        let need = self
            .peak_chunks
            .next_power_of_two()
            .clamp(QUEUE_MIN_CHUNKS, QUEUE_KEEP_CHUNKS);
        if self.small.capacity() > 0
            && (capacity > QUEUE_KEEP_CHUNKS || capacity > need * QUEUE_SLACK)
        {
            // Back to the queue's own small list; the longer one is freed whole.
            self.chunks = std::mem::take(&mut self.small);
            pool.freed_bytes += capacity * CHUNK_ENTRY_COST;
        }
        self.peak_chunks = 0;
        if self.vectored {
            self.uses_without_iov = 0;
        } else if self.io.is_some() {
            self.uses_without_iov += 1;
            if self.uses_without_iov >= IOV_IDLE_USES {
                self.io = None;
                self.uses_without_iov = 0;
                pool.freed_bytes += std::mem::size_of::<IoVecs>();
            }
        }
        self.vectored = false;
    }
}

impl Drop for SendQueue {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The kernel may still read these: leak them rather than free memory in use.
            let chunks = std::mem::take(&mut self.chunks);
            std::mem::forget(chunks);
            std::mem::forget(self.io.take());
        }
    }
}

/// The worker's pool of output buffers and send queues. Drained queues come back here, so an idle
/// connection owns none; after a burst (a broadcast to many connections) the pool is cut back to a few
/// items once the worker is quiet, and the freed memory is handed back to the system.
#[derive(Default)]
pub struct BufferPool {
    buffers: Vec<Vec<u8>>,
    // Boxed on purpose: a connection holds `Option<Box<SendQueue>>` (one pointer while idle).
    #[allow(clippy::vec_box)]
    queues: Vec<Box<SendQueue>>,
    /// Buffers and queues taken since the last [`BufferPool::shrink_if_quiet`].
    taken_since_check: usize,
    /// Consecutive calls of [`BufferPool::shrink_if_quiet`] with nothing taken.
    quiet_checks: u32,
    /// Items freed (over the caps) since memory was last handed back to the system.
    freed_since_trim: usize,
    /// Bytes freed (chunk lists cut back, buffers over the caps, chunks dropped unsent) since memory was
    /// last handed back to the system.
    freed_bytes: usize,
    /// Calls of [`BufferPool::shrink_if_quiet`] since memory was last handed back to the system.
    checks_since_trim: u32,
}

impl BufferPool {
    pub fn take_buffer(&mut self) -> Vec<u8> {
        self.taken_since_check += 1;
        self.buffers.pop().unwrap_or_default()
    }

    pub fn give_buffer(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= POOL_MAX_CAPACITY && self.buffers.len() < POOL_MAX_ITEMS {
            buf.clear();
            self.buffers.push(buf);
        } else if buf.capacity() > 0 {
            self.freed_since_trim += 1;
            self.freed_bytes += buf.capacity();
        }
    }

    /// A boxed queue, so that an idle connection pays one pointer for it.
    pub fn take_queue(&mut self) -> Box<SendQueue> {
        self.taken_since_check += 1;
        self.queues.pop().unwrap_or_default()
    }

    /// Free buffers and queues held (for tests and metrics).
    pub fn pooled(&self) -> (usize, usize) {
        (self.buffers.len(), self.queues.len())
    }

    /// Bytes of heap the free buffers hold (the sum of their capacities; for tests and metrics).
    pub fn pooled_buffer_capacity(&self) -> usize {
        self.buffers.iter().map(Vec::capacity).sum()
    }

    /// Called periodically (the worker's tick). Once nothing has been taken from the pool for
    /// `quiet_checks` calls in a row (so periodic bursts do not free and reallocate every time), cuts it
    /// back to [`POOL_QUIET_ITEMS`] buffers and queues; returns whether enough memory was freed since
    /// the last time this returned true (items over the caps, or [`TRIM_WORTH_BYTES`] of chunk lists cut
    /// back, big buffers and chunks dropped unsent) that handing it back to the system is worth it.
    ///
    /// While the pool is busy (output never stops), memory freed by queues is still handed back, at most
    /// once every `quiet_checks` calls: a burst that grew every queue would otherwise stay in the process
    /// for as long as output flows.
    pub fn shrink_if_quiet(&mut self, quiet_checks: u32) -> bool {
        self.checks_since_trim = self.checks_since_trim.saturating_add(1);
        if self.taken_since_check > 0 {
            self.taken_since_check = 0;
            self.quiet_checks = 0;
            return self.trim_due(quiet_checks);
        }
        self.quiet_checks = self.quiet_checks.saturating_add(1);
        if self.quiet_checks < quiet_checks {
            return false;
        }
        if self.buffers.len() > POOL_QUIET_ITEMS {
            self.freed_since_trim += self.buffers.len() - POOL_QUIET_ITEMS;
            self.buffers.truncate(POOL_QUIET_ITEMS);
            self.buffers.shrink_to(POOL_QUIET_ITEMS);
        }
        if self.queues.len() > POOL_QUIET_ITEMS {
            self.freed_since_trim += self.queues.len() - POOL_QUIET_ITEMS;
            self.queues.truncate(POOL_QUIET_ITEMS);
            self.queues.shrink_to(POOL_QUIET_ITEMS);
        }
        // The first quiet check after output: whatever the burst freed goes back now, however little (a
        // burst's last frees, after its last trim while busy, would otherwise stay for good).
        let burst_ended = self.quiet_checks == quiet_checks.max(1)
            && (self.freed_since_trim > 0 || self.freed_bytes > 0);
        if self.freed_since_trim >= POOL_QUIET_ITEMS || burst_ended {
            self.freed_since_trim = 0;
            self.freed_bytes = 0;
            self.checks_since_trim = 0;
            return true;
        }
        self.trim_due(1)
    }

    /// Whether [`TRIM_WORTH_BYTES`] were freed since memory was last handed back, at least `every` checks
    /// ago (the caller then hands it back; the count starts again).
    fn trim_due(&mut self, every: u32) -> bool {
        if self.freed_bytes >= TRIM_WORTH_BYTES && self.checks_since_trim >= every {
            self.freed_since_trim = 0;
            self.freed_bytes = 0;
            self.checks_since_trim = 0;
            return true;
        }
        false
    }

    /// Returns a queue to the pool, emptied (one with a send in flight is dropped instead, which leaks
    /// its in-flight buffers; see [`SendQueue`]).
    pub fn give_queue(&mut self, mut queue: Box<SendQueue>) {
        if queue.in_flight == 0 {
            queue.clear(self);
            if self.queues.len() < POOL_MAX_ITEMS {
                self.queues.push(queue);
            } else {
                self.freed_since_trim += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ring::next_ring_id;
    use super::super::Op;
    use super::*;

    /// The key of the test ring's sends.
    const KEY: u32 = 3;

    /// Stands in for a ring: stamps the sends it submits (key [`KEY`]) as `Ring::send_queue` does and
    /// mints the completion that ends each, numbered as `SendsInFlight` numbers them.
    struct TestRing {
        id: u64,
        ends: u64,
    }

    impl TestRing {
        fn new() -> TestRing {
            TestRing {
                id: next_ring_id(),
                ends: 0,
            }
        }

        fn submit(&mut self, q: &mut SendQueue) -> Option<SendOp> {
            q.prepare_send(self.id, KEY, self.ends)
        }

        /// The completion of the last send submitted, `result` bytes sent.
        fn completion(&mut self, result: i32) -> Completion {
            self.ends += 1;
            Completion::handed_over(
                u64::from(KEY) << 32 | Op::Send as u64,
                result,
                0,
                Handover::Send {
                    ring: self.id,
                    key: KEY,
                    end: self.ends,
                },
            )
        }

        fn finish(&mut self, q: &mut SendQueue, sent: usize, pool: &mut BufferPool) {
            let result = sent.min(i32::MAX as usize) as i32;
            q.complete_send(&mut self.completion(result), pool);
        }
    }

    fn sent_bytes(ring: &mut TestRing, q: &mut SendQueue) -> Vec<u8> {
        let mut out = Vec::new();
        match ring.submit(q).expect("something to send") {
            // SAFETY: the pointer and length were just taken from a live chunk of `q`.
            SendOp::Single(ptr, len) => unsafe {
                out.extend_from_slice(std::slice::from_raw_parts(ptr, len));
            },
            // SAFETY: the msghdr and iovecs were just filled from live chunks of `q`.
            SendOp::Vectored(msg) => unsafe {
                let msg = &*msg;
                for i in 0..msg.msg_iovlen {
                    let iov = &*msg.msg_iov.add(i);
                    out.extend_from_slice(std::slice::from_raw_parts(
                        iov.iov_base as *const u8,
                        iov.iov_len,
                    ));
                }
            },
        }
        out
    }

    #[test]
    fn a_single_chunk_needs_no_iovec_array() {
        let mut ring = TestRing::new();
        let mut pool = BufferPool::default();
        let mut q = SendQueue::new();
        q.push_shared(Arc::from(&b"frame"[..]));
        assert!(matches!(ring.submit(&mut q), Some(SendOp::Single(_, 5))));
        assert!(q.io.is_none());
        ring.finish(&mut q, 2, &mut pool);
        assert_eq!(sent_bytes(&mut ring, &mut q), b"ame");
        ring.finish(&mut q, 3, &mut pool);
        q.push_shared(Arc::from(&b"a"[..]));
        q.push_shared(Arc::from(&b"b"[..]));
        assert!(matches!(ring.submit(&mut q), Some(SendOp::Vectored(_))));
        assert!(q.io.is_some());
        ring.finish(&mut q, 2, &mut pool);
        assert!(q.is_empty());
    }

    #[test]
    fn coalesces_small_owned_and_keeps_shared_by_reference() {
        let mut ring = TestRing::new();
        let mut pool = BufferPool::default();
        let mut q = SendQueue::new();
        q.push_owned(&mut pool, 3, |b| b.extend_from_slice(b"abc"));
        q.push_owned(&mut pool, 2, |b| b.extend_from_slice(b"de"));
        let shared: Arc<[u8]> = Arc::from(&b"XYZ"[..]);
        q.push_shared(Arc::clone(&shared));
        assert_eq!(Arc::strong_count(&shared), 2);
        assert_eq!(q.queued_bytes(), 8);
        assert_eq!(q.chunks.len(), 2);
        assert_eq!(sent_bytes(&mut ring, &mut q), b"abcdeXYZ");
        // In flight: new bytes go to a new chunk, not into the one being sent.
        q.push_owned(&mut pool, 1, |b| b.push(b'!'));
        assert_eq!(q.chunks.len(), 3);
        ring.finish(&mut q, 8, &mut pool);
        assert_eq!(Arc::strong_count(&shared), 1);
        assert_eq!(sent_bytes(&mut ring, &mut q), b"!");
    }

    #[test]
    fn pool_is_cut_back_only_after_a_quiet_period() {
        let mut pool = BufferPool::default();
        let queues: Vec<_> = (0..1000).map(|_| pool.take_queue()).collect();
        for q in queues {
            pool.give_queue(q);
        }
        assert_eq!(pool.pooled().1, 1000);
        // Items were taken since the last check: busy, keep everything.
        assert!(!pool.shrink_if_quiet(2));
        assert_eq!(pool.pooled().1, 1000);
        // Quiet once: not yet.
        assert!(!pool.shrink_if_quiet(2));
        assert_eq!(pool.pooled().1, 1000);
        // Activity resets the count.
        let q = pool.take_queue();
        pool.give_queue(q);
        assert!(!pool.shrink_if_quiet(2));
        assert!(!pool.shrink_if_quiet(2));
        assert_eq!(pool.pooled().1, 1000);
        // Quiet twice in a row: cut back, and worth a trim.
        assert!(pool.shrink_if_quiet(2));
        assert_eq!(pool.pooled().1, POOL_QUIET_ITEMS);
        // Nothing more freed: no second trim.
        assert!(!pool.shrink_if_quiet(2));
        assert_eq!(pool.pooled().1, POOL_QUIET_ITEMS);
    }

    #[test]
    fn cost_counts_entries_whole_frames_and_owned_bytes() {
        let mut ring = TestRing::new();
        let mut pool = BufferPool::default();
        let mut q = SendQueue::new();
        let tiny: Arc<[u8]> = Arc::from(&b"\x82\x01x"[..]);
        for _ in 0..1000 {
            q.push_shared(Arc::clone(&tiny));
        }
        // 3 bytes queued per frame, but each holds an entry and (pinned) the frame's allocation.
        assert_eq!(q.queued_bytes(), 3000);
        let per_frame = CHUNK_ENTRY_COST + 3 + SHARED_HEADER_COST;
        assert!(per_frame >= 40, "{per_frame}");
        assert_eq!(q.queued_cost(), 1000 * per_frame);
        // An owned buffer costs its entry and its bytes, not the spare capacity it came from the pool with.
        q.push_owned(&mut pool, 1, |b| {
            b.reserve(4096);
            b.push(b'!')
        });
        let Some(Chunk::Owned(buf)) = q.chunks.back() else {
            panic!("an owned chunk")
        };
        assert!(buf.capacity() >= 4096);
        let owned = CHUNK_ENTRY_COST + 1;
        assert_eq!(q.queued_bytes(), 3001);
        assert_eq!(q.queued_cost(), 1000 * per_frame + owned);
        // Appending to it (coalesced) adds its bytes.
        q.push_owned(&mut pool, 2, |b| b.extend_from_slice(b"ok"));
        let owned = owned + 2;
        assert_eq!(q.queued_cost(), 1000 * per_frame + owned);
        // A partly sent frame still holds its memory; sent chunks no longer do.
        let _ = ring.submit(&mut q);
        ring.finish(&mut q, 2 * 3 + 1, &mut pool);
        assert_eq!(q.queued_cost(), 998 * per_frame + owned);
        while ring.submit(&mut q).is_some() {
            ring.finish(&mut q, usize::MAX, &mut pool);
        }
        assert_eq!((q.queued_bytes(), q.queued_cost()), (0, 0));
        // A cleared queue costs nothing either.
        q.push_shared(Arc::clone(&tiny));
        q.push_owned(&mut pool, 5, |b| b.extend_from_slice(b"hello"));
        q.clear(&mut pool);
        assert_eq!(q.queued_cost(), 0);
    }

    #[test]
    fn a_cap_on_cost_bounds_the_entries_of_tiny_frames() {
        const CAP: usize = 1 << 20;
        let mut q = SendQueue::new();
        let tiny: Arc<[u8]> = Arc::from(&b"\x82\x01x"[..]);
        let mut entries = 0;
        while q.queued_cost() <= CAP {
            q.push_shared(Arc::clone(&tiny));
            entries += 1;
        }
        // A cap on payload bytes would have let 350,000 entries (8 MiB of list) in.
        assert!(entries <= CAP / 40 + 1, "{entries}");
        assert!(q.chunks.len() * CHUNK_ENTRY_COST <= CAP);
    }

    #[test]
    fn a_drained_queue_gives_back_its_chunk_list_and_asks_for_a_trim() {
        let mut ring = TestRing::new();
        let mut pool = BufferPool::default();
        let tiny: Arc<[u8]> = Arc::from(&b"\x82\x01x"[..]);
        // Drained by sends.
        let mut q = pool.take_queue();
        for _ in 0..100_000 {
            q.push_shared(Arc::clone(&tiny));
        }
        assert!(q.chunks.capacity() >= 100_000);
        while ring.submit(&mut q).is_some() {
            ring.finish(&mut q, usize::MAX, &mut pool);
        }
        assert!(q.chunks.capacity() <= QUEUE_KEEP_CHUNKS);
        pool.give_queue(q);
        // The freed list is worth handing back to the system, busy (a queue was taken) or not; once.
        assert!(pool.shrink_if_quiet(1));
        assert!(!pool.shrink_if_quiet(1));
        // Dropped unsent (the connection went away): the queue goes back to the pool small.
        let mut q = pool.take_queue();
        for _ in 0..100_000 {
            q.push_shared(Arc::clone(&tiny));
        }
        pool.give_queue(q);
        let q = pool.take_queue();
        assert!(q.chunks.capacity() <= QUEUE_KEEP_CHUNKS);
        assert_eq!(Arc::strong_count(&tiny), 1);
        pool.give_queue(q);
        assert!(pool.shrink_if_quiet(1));
        // A queue that stays small keeps its list: no allocation per drain in steady state.
        let mut q = pool.take_queue();
        for _ in 0..10 {
            q.push_shared(Arc::clone(&tiny));
            let _ = ring.submit(&mut q);
            ring.finish(&mut q, usize::MAX, &mut pool);
        }
        assert!(q.chunks.capacity() > 0);
    }

    /// A burst held up a worker and grew every queue; output then flows on (the pool is never quiet):
    /// each queue gives its burst's chunk list and iovec array back within a few ordinary uses, and the
    /// worker is told to hand the memory back while still busy. Queues whose bursts keep their size keep
    /// their list and array (no reallocation per use).
    #[test]
    fn one_burst_does_not_leave_a_queue_at_its_size_while_output_flows() {
        let mut ring = TestRing::new();
        let mut pool = BufferPool::default();
        let frame: Arc<[u8]> = Arc::from(&b"\x81\x05hello"[..]);
        let mut drain = |q: &mut SendQueue, pool: &mut BufferPool| {
            while ring.submit(q).is_some() {
                ring.finish(q, usize::MAX, pool);
            }
        };
        let mut q = pool.take_queue();
        // The burst: 100 frames queued at once, sent vectored.
        for _ in 0..100 {
            q.push_shared(Arc::clone(&frame));
        }
        drain(&mut q, &mut pool);
        assert!(q.chunks.capacity() >= 100 && q.io.is_some());
        pool.give_queue(q);
        // Ordinary uses: one frame each, plain sends.
        let mut q = pool.take_queue();
        q.push_shared(Arc::clone(&frame));
        drain(&mut q, &mut pool);
        assert!(
            q.chunks.capacity() <= QUEUE_MIN_CHUNKS,
            "{}",
            q.chunks.capacity()
        );
        for _ in 1..IOV_IDLE_USES {
            assert!(q.io.is_some());
            q.push_shared(Arc::clone(&frame));
            drain(&mut q, &mut pool);
        }
        assert!(
            q.io.is_none(),
            "the iovec array stays after {IOV_IDLE_USES} uses without one"
        );
        assert!(pool.freed_bytes >= 64 * CHUNK_ENTRY_COST + std::mem::size_of::<IoVecs>());
        // Steady bursts of 20: the list and the array are kept from use to use.
        for _ in 0..20 {
            q.push_shared(Arc::clone(&frame));
        }
        drain(&mut q, &mut pool);
        let (capacity, iov) = (
            q.chunks.capacity(),
            q.io.as_ref().map(|io| &**io as *const IoVecs),
        );
        for _ in 0..10 {
            for _ in 0..20 {
                q.push_shared(Arc::clone(&frame));
            }
            drain(&mut q, &mut pool);
            assert_eq!(q.chunks.capacity(), capacity);
            assert_eq!(q.io.as_ref().map(|io| &**io as *const IoVecs), iov);
        }
        pool.give_queue(q);
    }

    /// When output stops, what was freed since the last hand-back goes back at the first quiet check,
    /// even below `TRIM_WORTH_BYTES`; with nothing freed, and at later quiet checks, nothing happens.
    #[test]
    fn the_end_of_a_burst_hands_back_what_it_freed() {
        let mut pool = BufferPool::default();
        let q = pool.take_queue();
        pool.give_queue(q);
        assert!(!pool.shrink_if_quiet(2), "busy");
        pool.freed_bytes += 4096;
        assert!(!pool.shrink_if_quiet(2), "quiet once");
        assert!(
            pool.shrink_if_quiet(2),
            "the burst ended: 4 KiB freed go back"
        );
        pool.freed_bytes += 4096;
        assert!(!pool.shrink_if_quiet(2), "still quiet: no trim per check");
        // A burst that freed nothing.
        let q = pool.take_queue();
        pool.give_queue(q);
        pool.freed_bytes = 0;
        assert!(!pool.shrink_if_quiet(2));
        assert!(!pool.shrink_if_quiet(2));
        assert!(
            !pool.shrink_if_quiet(2),
            "nothing freed: nothing to hand back"
        );
    }

    /// Freed memory is handed back while the pool is busy too, at most once every `quiet_checks` calls.
    #[test]
    fn freed_memory_is_handed_back_while_busy_at_a_bounded_rate() {
        let mut pool = BufferPool::default();
        let busy = |pool: &mut BufferPool| {
            let q = pool.take_queue();
            pool.give_queue(q);
        };
        busy(&mut pool);
        assert!(!pool.shrink_if_quiet(3), "nothing freed");
        pool.freed_bytes += TRIM_WORTH_BYTES;
        busy(&mut pool);
        assert!(!pool.shrink_if_quiet(3), "two checks since the last trim");
        busy(&mut pool);
        assert!(pool.shrink_if_quiet(3));
        pool.freed_bytes += TRIM_WORTH_BYTES;
        for _ in 0..2 {
            busy(&mut pool);
            assert!(!pool.shrink_if_quiet(3));
        }
        busy(&mut pool);
        assert!(pool.shrink_if_quiet(3));
    }

    #[test]
    fn short_send_continues_from_the_offset() {
        let mut ring = TestRing::new();
        let mut pool = BufferPool::default();
        let mut q = SendQueue::new();
        q.push_owned(&mut pool, 6, |b| b.extend_from_slice(b"hello!"));
        q.push_shared(Arc::from(&b"world"[..]));
        let _ = sent_bytes(&mut ring, &mut q);
        ring.finish(&mut q, 4, &mut pool);
        assert_eq!(q.queued_bytes(), 7);
        assert_eq!(sent_bytes(&mut ring, &mut q), b"o!world");
        ring.finish(&mut q, 3, &mut pool);
        assert_eq!(sent_bytes(&mut ring, &mut q), b"orld");
        ring.finish(&mut q, 4, &mut pool);
        assert!(q.is_empty());
        assert!(ring.submit(&mut q).is_none());
    }

    #[test]
    fn a_byte_count_cannot_end_a_send_in_flight() {
        let mut ring = TestRing::new();
        let mut pool = BufferPool::default();
        let mut q = SendQueue::new();
        q.push_owned(&mut pool, 5, |b| b.extend_from_slice(b"hello"));
        let _ = ring.submit(&mut q).expect("a send");
        // The kernel may be reading "hello": consuming it would give its buffer back to the pool.
        let stray = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.complete(5, &mut pool);
        }));
        assert!(stray.is_err(), "a byte count ended a send in flight");
        let cleared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.clear(&mut pool);
        }));
        assert!(cleared.is_err(), "a queue in flight was cleared");
        assert!(q.send_in_flight());
        assert_eq!(
            (q.queued_bytes(), q.chunks.len(), pool.pooled().0),
            (5, 1, 0)
        );
        ring.finish(&mut q, 5, &mut pool);
        assert!(q.is_empty());
        assert_eq!(pool.pooled().0, 1);
    }

    #[test]
    fn only_the_completion_of_this_send_ends_it() {
        let mut ring = TestRing::new();
        let mut pool = BufferPool::default();
        let mut q = SendQueue::new();
        q.push_shared(Arc::from(&b"one"[..]));
        let _ = ring.submit(&mut q).expect("a send");
        let mut first = ring.completion(3);
        q.complete_send(&mut first, &mut pool);
        q.push_shared(Arc::from(&b"two"[..]));
        let _ = ring.submit(&mut q).expect("a send");
        let mut other_ring = TestRing {
            id: next_ring_id(),
            ends: ring.ends,
        };
        let end = |key, end| {
            Completion::handed_over(
                3,
                3,
                0,
                Handover::Send {
                    ring: ring.id,
                    key,
                    end,
                },
            )
        };
        let mut refused = vec![
            // The spent completion of the first send.
            first,
            // An end of this key handed over before this send was submitted (never redeemed).
            end(KEY, ring.ends),
            // The next end of this ring, for another key.
            end(KEY + 1, ring.ends + 1),
            // This send's end, from another ring.
            other_ring.completion(3),
            // A completion handing over a buffer.
            Completion::handed_over(
                3,
                3,
                0,
                Handover::Buffer {
                    ring: ring.id,
                    id: 0,
                    len: 3,
                },
            ),
        ];
        for completion in &mut refused {
            let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                q.complete_send(completion, &mut pool);
            }));
            assert!(ended.is_err(), "{completion:?} ended the send in flight");
            assert!(q.send_in_flight() && q.queued_bytes() == 3);
        }
        ring.finish(&mut q, 3, &mut pool);
        assert!(q.is_empty());
    }

    #[test]
    fn a_send_never_ends_more_than_it_covered() {
        let mut ring = TestRing::new();
        let mut pool = BufferPool::default();
        let mut q = SendQueue::new();
        q.push_shared(Arc::from(&b"sent"[..]));
        let _ = ring.submit(&mut q).expect("a send");
        q.push_shared(Arc::from(&b"queued after"[..]));
        // A result past what the send covered does not eat the bytes queued after it.
        ring.finish(&mut q, 1000, &mut pool);
        assert_eq!(q.queued_bytes(), 12);
        assert_eq!(sent_bytes(&mut ring, &mut q), b"queued after");
    }
}
