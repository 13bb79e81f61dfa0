//! A simulated ring (feature `sim-ring`, off by default): [`Ring`], [`BufRing`] and [`RecvBuf`] with the
//! signatures of the real ones, in memory, so that a whole worker can be driven by a test or a fuzz
//! target instead of a kernel.
//!
//! It owns the simulated kernel's state: operations submitted and not yet finished ([`Submitted`]), the
//! completions posted for the worker to drain, the fixed-file table, the provided buffers (published to
//! the "kernel", filled for a completion, lent to the worker) and the worker's clock ([`now`], moved only
//! by [`advance_clock`]). Completions are produced by a driver through the `kernel_*` methods, in any
//! order it likes; the simulation only keeps the kernel's own rules (an operation completes once, a
//! multishot until a completion without `MORE`; a buffer is lent for one completion; a fixed file is
//! installed at accept and freed at its close) and panics, naming the rule, when the worker breaks one
//! of them. It never does I/O: a send "sends" a copy of the bytes its queue covers. The one system call
//! is the close of a descriptor the worker handed over with `close_fd` (the listener at shutdown).
//!
//! It keeps the reactor's contract as the kernel ring does (see [`super::ring`]): each simulated ring has
//! its own identity ([`next_ring_id`], never shared with a real ring); a completion that fills a provided
//! buffer hands over that buffer of the one [`BufRing`] registered with the ring, and [`BufRing::take`]
//! lends it only against that hand-over; the ring numbers each send (one in flight per key, the
//! operation `Send` reserved to [`Ring::send_queue`]) and only the completion of that send hands over
//! its end to [`SendQueue::complete_send`](super::SendQueue::complete_send).
//!
//! Under the feature these types replace the real ones everywhere in the crate, so a build with
//! `sim-ring` cannot serve: [`Ring::new`] refuses, and only [`Ring::simulated`] builds one.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::ring::{next_ring_id, Completion, Handover, RingSetup, SendsInFlight};
use super::send::SendQueue;
use super::Op;

/// `IORING_CQE_F_BUFFER`: the completion carries a provided buffer.
pub const CQE_F_BUFFER: u32 = 1;
/// `IORING_CQE_F_MORE`: the multishot request stays armed.
pub const CQE_F_MORE: u32 = 2;
/// `IORING_CQE_BUFFER_SHIFT`: where a completion's flags carry its buffer id.
pub const CQE_BUFFER_SHIFT: u32 = 16;

/// The simulated ring's descriptor: not a real one (it is only passed back to `ring_doorbell`).
pub const SIM_RING_FD: RawFd = 1 << 30;

/// Whether `user_data` is reserved to sends (low byte [`Op::Send`]), as the kernel ring reads it.
fn is_send(user_data: u64) -> bool {
    (user_data & 0xff) as u8 == Op::Send as u8
}

/// Refuses a `user_data` reserved to sends for any other submission, as the kernel ring does.
fn not_a_send(user_data: u64) {
    assert!(
        !is_send(user_data),
        "user_data {user_data:#x} is reserved to Ring::send_queue (operation Send)"
    );
}

/// An operation the worker submitted, as the simulated kernel holds it until its final completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimOp {
    AcceptMulti,
    AcceptOne,
    /// A multishot receive, or one receive of one buffer (`recv_once`).
    Recv {
        file_index: u32,
        multishot: bool,
    },
    /// The bytes the send covers, copied at submission.
    Send {
        file_index: u32,
        bytes: Vec<u8>,
    },
    Shutdown {
        file_index: u32,
    },
    CloseFixed {
        file_index: u32,
    },
    CloseFd {
        fd: RawFd,
    },
    Cancel {
        target: u64,
    },
    Tick {
        interval: Duration,
    },
    /// A `MSG_RING` to `target_fd` posting `user_data` there.
    MsgRing {
        target_fd: RawFd,
        user_data: u64,
    },
}

impl SimOp {
    /// Whether the kernel keeps it armed across completions.
    pub fn is_multishot(&self) -> bool {
        matches!(
            self,
            SimOp::AcceptMulti
                | SimOp::Recv {
                    multishot: true,
                    ..
                }
                | SimOp::Tick { .. }
        )
    }

    /// The direct descriptor it uses, if any.
    pub fn file_index(&self) -> Option<u32> {
        match self {
            SimOp::Recv { file_index, .. }
            | SimOp::Send { file_index, .. }
            | SimOp::Shutdown { file_index }
            | SimOp::CloseFixed { file_index } => Some(*file_index),
            _ => None,
        }
    }
}

/// One submitted operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub user_data: u64,
    pub op: SimOp,
}

/// The simulated ring of one worker.
pub struct Ring {
    /// This ring's identity, stamped on what its completions hand over.
    id: u64,
    setup: RingSetup,
    /// Whether a [`BufRing`] is registered with this ring (it serves one).
    has_buffers: Cell<bool>,
    /// The keys with a send in flight, as the kernel ring keeps them.
    sends: SendsInFlight,
    /// Submitted operations not yet finally completed, in submission order.
    pending: Vec<Submitted>,
    /// Completions posted and not yet drained by the worker.
    posted: VecDeque<Completion>,
    /// The fixed-file table: whether each slot holds a descriptor.
    files: Vec<bool>,
    /// Descriptors handed to the ring to close (the listener at shutdown), closed when that completes.
    closed_fds: usize,
}

impl Ring {
    /// Refuses: a build with `sim-ring` has no kernel ring (see the module doc).
    pub fn new(_sq_entries: u32, _cq_entries: u32, _fixed_files: u32) -> io::Result<Ring> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "built with the sim-ring feature: no kernel ring",
        ))
    }

    /// A simulated ring with a fixed-file table of `fixed_files` slots.
    pub fn simulated(fixed_files: u32) -> Ring {
        Ring {
            id: next_ring_id(),
            setup: RingSetup {
                single_issuer: true,
                defer_taskrun: true,
                submit_all: true,
                sq_entries: 0,
                cq_entries: 0,
                fixed_files,
                shrunk_from: None,
            },
            has_buffers: Cell::new(false),
            sends: SendsInFlight::new(fixed_files as usize),
            pending: Vec::new(),
            posted: VecDeque::new(),
            files: vec![false; fixed_files as usize],
            closed_fds: 0,
        }
    }

    /// This ring's identity.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub fn setup(&self) -> &RingSetup {
        &self.setup
    }

    pub fn fd(&self) -> RawFd {
        SIM_RING_FD
    }

    fn push(&mut self, user_data: u64, op: SimOp) {
        self.pending.push(Submitted { user_data, op });
    }

    pub fn accept_multishot(&mut self, _listener: RawFd, user_data: u64) {
        not_a_send(user_data);
        self.push(user_data, SimOp::AcceptMulti);
    }

    pub fn accept_one(&mut self, _listener: RawFd, user_data: u64) {
        not_a_send(user_data);
        self.push(user_data, SimOp::AcceptOne);
    }

    pub fn recv_multishot(&mut self, file_index: u32, _buf_group: u16, user_data: u64) {
        self.recv(file_index, user_data, true);
    }

    pub fn recv_once(&mut self, file_index: u32, _buf_group: u16, user_data: u64) {
        self.recv(file_index, user_data, false);
    }

    fn recv(&mut self, file_index: u32, user_data: u64, multishot: bool) {
        not_a_send(user_data);
        self.assert_installed(file_index, "recv");
        self.push(
            user_data,
            SimOp::Recv {
                file_index,
                multishot,
            },
        );
    }

    /// Marks the queue's next part in flight as a send of its key on this ring (as the real ring does,
    /// with the same refusals and panics) and keeps a copy of its bytes.
    pub fn send_queue(&mut self, file_index: u32, queue: &mut SendQueue, user_data: u64) -> bool {
        assert!(
            is_send(user_data),
            "a send's user_data must have the operation Send: {user_data:#x}"
        );
        let key = (user_data >> 32) as usize;
        let keys = self.setup.fixed_files as usize;
        assert!(
            key < keys,
            "a send's key must be below the fixed-file table size ({keys}): {key}"
        );
        if self.sends.in_flight(key) {
            return false;
        }
        if queue
            .prepare_send(self.id, key as u32, self.sends.ends())
            .is_none()
        {
            return false;
        }
        self.sends.begin(key);
        self.assert_installed(file_index, "send");
        if let Some(other) = self
            .pending
            .iter()
            .find(|p| matches!(p.op, SimOp::Send { file_index: f, .. } if f == file_index))
        {
            panic!("sim ring: a second send on direct descriptor {file_index} while {other:?} is in flight");
        }
        let mut bytes = Vec::with_capacity(queue.queued_bytes());
        for chunk in queue.in_flight_bytes() {
            bytes.extend_from_slice(chunk);
        }
        self.push(user_data, SimOp::Send { file_index, bytes });
        true
    }

    pub fn shutdown(&mut self, file_index: u32, _how: i32, user_data: u64) {
        not_a_send(user_data);
        self.assert_installed(file_index, "shutdown");
        self.push(user_data, SimOp::Shutdown { file_index });
    }

    /// The worker closes a direct descriptor only once nothing else is in flight on it.
    pub fn close_fixed(&mut self, file_index: u32, user_data: u64) {
        not_a_send(user_data);
        self.assert_installed(file_index, "close");
        if let Some(busy) = self
            .pending
            .iter()
            .find(|p| p.op.file_index() == Some(file_index))
        {
            panic!("sim ring: direct descriptor {file_index} closed with {busy:?} still in flight");
        }
        self.push(user_data, SimOp::CloseFixed { file_index });
    }

    pub fn close_fd(&mut self, fd: RawFd, user_data: u64) {
        not_a_send(user_data);
        self.push(user_data, SimOp::CloseFd { fd });
    }

    /// As the real ring's TCP_QUICKACK: a simulated connection has no TCP state; nothing to do.
    pub fn quick_ack(&mut self, _file_index: u32, user_data: u64) {
        not_a_send(user_data);
    }

    /// As the real ring's, but a simulated connection has no socket to install: the completion fails
    /// with `EOPNOTSUPP` at once.
    pub fn install_fd(&mut self, _file_index: u32, user_data: u64) {
        not_a_send(user_data);
        self.push(user_data, SimOp::Cancel { target: 0 });
        let index = self.pending.len() - 1;
        self.kernel_complete(index, -libc::EOPNOTSUPP, false, None);
    }

    pub fn cancel(&mut self, target: u64, user_data: u64) {
        not_a_send(user_data);
        self.push(user_data, SimOp::Cancel { target });
    }

    pub fn tick_every(&mut self, interval: Duration, user_data: u64) {
        not_a_send(user_data);
        self.push(user_data, SimOp::Tick { interval });
    }

    pub fn ring_doorbell(
        &mut self,
        target_ring_fd: RawFd,
        _value: i32,
        user_data: u64,
        own_user_data: u64,
    ) {
        not_a_send(user_data);
        not_a_send(own_user_data);
        self.push(
            own_user_data,
            SimOp::MsgRing {
                target_fd: target_ring_fd,
                user_data,
            },
        );
    }

    /// Nothing to submit: the driver posts completions before each batch. Waiting for more completions
    /// than are posted would wait for the driver, which only runs between batches: an error
    /// (`WouldBlock`), so that a loop waiting inside the worker (the end of a shutdown) stops.
    /// As the real ring's: submits, waits for nothing (the simulation posts what its input says).
    pub fn submit_and_reap(&mut self) -> io::Result<()> {
        self.submit_and_wait(0)
    }

    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        if want > self.posted.len() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "sim ring: no completion posted",
            ));
        }
        Ok(())
    }

    pub fn drain_completions(&mut self, out: &mut Vec<Completion>) {
        out.extend(self.posted.drain(..));
    }

    /// Moves up to `max` posted completions into `out`, in order, as the kernel ring does.
    pub fn drain_completions_up_to(&mut self, out: &mut Vec<Completion>, max: usize) {
        let n = self.posted.len().min(max);
        out.extend(self.posted.drain(..n));
    }

    fn assert_installed(&self, file_index: u32, what: &str) {
        assert!(
            self.files.get(file_index as usize) == Some(&true),
            "sim ring: {what} on direct descriptor {file_index}, which is not installed"
        );
    }

    // ---- the simulated kernel, for the driver ----

    /// Operations submitted and not finally completed, in submission order.
    pub fn kernel_pending(&self) -> &[Submitted] {
        &self.pending
    }

    /// Completions posted and not yet drained.
    pub fn kernel_posted(&self) -> usize {
        self.posted.len()
    }

    /// Slots of the fixed-file table in use.
    pub fn kernel_files_in_use(&self) -> usize {
        self.files.iter().filter(|&&used| used).count()
    }

    /// Descriptors the ring closed (`close_fd` completed).
    pub fn kernel_closed_fds(&self) -> usize {
        self.closed_fds
    }

    /// Posts a completion of pending operation `index` with `result`, `MORE` when `more` (only for a
    /// multishot; the operation stays pending) and `buffer` as its provided buffer. A completion without
    /// `MORE` finishes the operation.
    pub fn kernel_complete(
        &mut self,
        index: usize,
        result: i32,
        more: bool,
        buffer: Option<u16>,
    ) -> Submitted {
        let more = more && self.pending[index].op.is_multishot();
        let submitted = if more {
            self.pending[index].clone()
        } else {
            self.pending.remove(index)
        };
        let mut flags = 0;
        if more {
            flags |= CQE_F_MORE;
        }
        let handover = if let Some(id) = buffer {
            assert!(
                self.has_buffers.get(),
                "sim driver: a buffer handed over by a ring with no buffer ring"
            );
            flags |= CQE_F_BUFFER | (u32::from(id) << CQE_BUFFER_SHIFT);
            Handover::Buffer {
                ring: self.id,
                id,
                len: result.max(0) as usize,
            }
        } else if is_send(submitted.user_data) {
            // Only `send_queue` submits this operation, one per key at a time: this ends it.
            self.sends
                .end(self.id, (submitted.user_data >> 32) as usize)
        } else {
            Handover::None
        };
        self.posted.push_back(Completion::handed_over(
            submitted.user_data,
            result,
            flags,
            handover,
        ));
        submitted
    }

    /// Finishes pending operation `index` without posting a completion (a `MSG_RING` with
    /// `IOSQE_CQE_SKIP_SUCCESS` that succeeded; no other operation is submitted with that flag, and a
    /// send must end with the completion that hands its end over).
    pub fn kernel_finish_silently(&mut self, index: usize) -> Submitted {
        assert!(
            matches!(self.pending[index].op, SimOp::MsgRing { .. }),
            "sim driver: {:?} finished without a completion",
            self.pending[index].op
        );
        self.pending.remove(index)
    }

    /// Completes accept `index`: a connection installed in the lowest free slot (its index is the result),
    /// or `-ENFILE` (ending a multishot) when the table is full. Returns the slot.
    pub fn kernel_accept(&mut self, index: usize, more: bool) -> Option<u32> {
        match self.files.iter().position(|&used| !used) {
            Some(slot) => {
                self.files[slot] = true;
                self.kernel_complete(index, slot as i32, more, None);
                Some(slot as u32)
            }
            None => {
                self.kernel_complete(index, -libc::ENFILE, false, None);
                None
            }
        }
    }

    /// Completes close `index` (a direct descriptor's slot is freed) with 0.
    pub fn kernel_close(&mut self, index: usize) {
        match self.pending[index].op {
            SimOp::CloseFixed { file_index } => self.files[file_index as usize] = false,
            SimOp::CloseFd { fd } => {
                // SAFETY: the worker gave up the descriptor (forgot its owner) and handed it to the ring
                // to close, as it does with the kernel ring; nothing else owns or uses it.
                unsafe { libc::close(fd) };
                self.closed_fds += 1;
            }
            ref other => panic!("sim driver: kernel_close on {other:?}"),
        }
        self.kernel_complete(index, 0, false, None);
    }

    /// Completes cancel `index`: every pending operation with its target `user_data` ends with
    /// `-ECANCELED`, then the cancel itself with 0 (or `-ENOENT` when nothing matched).
    pub fn kernel_cancel(&mut self, index: usize) {
        let SimOp::Cancel { target } = self.pending[index].op else {
            panic!("sim driver: kernel_cancel on {:?}", self.pending[index].op);
        };
        let cancel = self.pending.remove(index);
        let mut found = 0;
        while let Some(i) = self.pending.iter().position(|p| p.user_data == target) {
            found += 1;
            self.kernel_complete(i, -libc::ECANCELED, false, None);
        }
        self.posted.push_back(Completion::handed_over(
            cancel.user_data,
            if found > 0 { 0 } else { -libc::ENOENT },
            0,
            Handover::None,
        ));
    }

    /// Posts a completion that no submission asked for (a doorbell from another ring, which may not
    /// carry the operation `Send`: every doorbell refuses it).
    pub fn kernel_post(&mut self, user_data: u64, result: i32) {
        assert!(
            !is_send(user_data),
            "sim driver: a doorbell posted with a send's user_data {user_data:#x}"
        );
        self.posted.push_back(Completion::handed_over(
            user_data,
            result,
            0,
            Handover::None,
        ));
    }
}

/// One received buffer, lent against the completion that handed it over until it is recycled.
pub struct RecvBuf {
    /// The identity of the ring whose buffer ring lent it.
    ring: u64,
    id: u16,
    bytes: Vec<u8>,
    len: usize,
}

impl RecvBuf {
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }

    /// The buffer's id in its ring.
    pub fn id(&self) -> u16 {
        self.id
    }
}

/// Where a provided buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BufState {
    /// Published: the kernel may fill it.
    Published,
    /// Filled for a posted completion, not taken yet.
    Filled(usize),
    /// Lent to the worker.
    Lent,
}

/// The simulated provided buffer ring, one per [`Ring`].
pub struct BufRing {
    /// The identity of the ring this buffer ring is registered with.
    ring: u64,
    group: u16,
    buf_size: usize,
    /// Each buffer's bytes while it is not lent.
    buffers: Vec<Vec<u8>>,
    state: Vec<BufState>,
}

impl BufRing {
    /// Refuses what the kernel ring's [`BufRing`](super::buf_ring::BufRing) refuses: a count that is not
    /// a power of two up to 32768, a size the kernel cannot describe, a second buffer ring on `ring`.
    pub fn new(ring: &Ring, group: u16, count: u16, buf_size: usize) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two <= 32768",
            ));
        }
        if buf_size == 0
            || buf_size > u32::MAX as usize
            || (count as usize).checked_mul(buf_size).is_none()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer size must be 1 to 4 GiB - 1 bytes, and all buffers addressable",
            ));
        }
        if ring.has_buffers.replace(true) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a ring serves one buffer ring",
            ));
        }
        Ok(BufRing {
            ring: ring.id(),
            group,
            buf_size,
            buffers: vec![Vec::new(); count as usize],
            state: vec![BufState::Published; count as usize],
        })
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Takes the buffer `completion` handed over; `None` if it carries none (or it was taken already).
    ///
    /// # Panics
    /// As the kernel ring's: a completion of another ring, a buffer lent already; and when the simulated
    /// kernel did not fill that buffer for as many bytes.
    pub fn take(&mut self, completion: &mut Completion) -> Option<RecvBuf> {
        let (id, len) = match completion.handover {
            Handover::Buffer { ring, id, len } => {
                assert_eq!(
                    ring, self.ring,
                    "a buffer handed over by another ring's completion"
                );
                (id, len)
            }
            _ => return None,
        };
        assert!(
            (id as usize) < self.state.len() && len <= self.buf_size,
            "buffer id or length out of range"
        );
        match self.state[id as usize] {
            BufState::Filled(filled) => assert!(
                len <= filled,
                "sim ring: buffer {id} taken for {len} bytes, filled with {filled}"
            ),
            BufState::Lent => panic!("buffer {id} is lent already"),
            BufState::Published => panic!("sim ring: buffer {id} taken while the kernel's"),
        }
        completion.handover = Handover::None;
        self.state[id as usize] = BufState::Lent;
        Some(RecvBuf {
            ring: self.ring,
            id,
            bytes: std::mem::take(&mut self.buffers[id as usize]),
            len,
        })
    }

    /// A receive found the ring dry. The simulated ring provides all its buffers from the start (its
    /// `ENOBUFS` means every one is in use): nothing to add.
    pub fn ran_dry(&mut self) {}

    /// The real ring gives back the pages of buffers unused for a period; simulated buffers have no
    /// pages to give back.
    pub fn release_unused(&mut self, _ring: &Ring, _every: u32) -> usize {
        0
    }

    /// Gives a buffer back to the kernel.
    ///
    /// # Panics
    /// If `buf` was lent by another buffer ring.
    pub fn recycle(&mut self, buf: RecvBuf) {
        assert_eq!(buf.ring, self.ring, "a buffer lent by another buffer ring");
        assert_eq!(
            self.state[buf.id as usize],
            BufState::Lent,
            "buffer {} is not lent",
            buf.id
        );
        self.state[buf.id as usize] = BufState::Published;
        self.buffers[buf.id as usize] = buf.bytes;
    }

    // ---- the simulated kernel, for the driver ----

    /// Fills a published buffer with `bytes` (at most `buf_size`) for a completion; `None` when every
    /// buffer is in use (a receive then fails with `ENOBUFS`).
    pub fn kernel_fill(&mut self, bytes: &[u8]) -> Option<u16> {
        assert!(
            bytes.len() <= self.buf_size,
            "sim driver: overfilled buffer"
        );
        let id = self.state.iter().position(|s| *s == BufState::Published)?;
        let buffer = &mut self.buffers[id];
        buffer.clear();
        buffer.extend_from_slice(bytes);
        self.state[id] = BufState::Filled(bytes.len());
        Some(id as u16)
    }

    /// Buffers not published to the kernel (filled for a completion, or lent).
    pub fn kernel_out(&self) -> usize {
        self.state
            .iter()
            .filter(|s| **s != BufState::Published)
            .count()
    }
}

thread_local! {
    /// The simulated clock of this thread's worker: a fixed origin plus the time the driver advanced.
    static CLOCK: (Instant, Cell<Duration>) = (Instant::now(), Cell::new(Duration::ZERO));
}

/// The simulated monotonic clock (the worker reads it instead of `Instant::now()`).
pub fn now() -> Instant {
    CLOCK.with(|(origin, advanced)| *origin + advanced.get())
}

/// Moves the simulated clock forward.
pub fn advance_clock(by: Duration) {
    CLOCK.with(|(_, advanced)| advanced.set(advanced.get() + by));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::reactor::{BufferPool, UserData};

    fn ud(key: u32, op: Op) -> u64 {
        UserData::new(key, 1, op).encode()
    }

    /// A ring with a connection in slot 0 and its receive armed (pending operation 0).
    fn receiving(buffers: u16) -> (Ring, BufRing) {
        let mut ring = Ring::simulated(4);
        let bufs = BufRing::new(&ring, 0, buffers, 8).unwrap();
        ring.accept_one(0, ud(0, Op::AcceptOne));
        assert_eq!(ring.kernel_accept(0, false), Some(0));
        ring.recv_multishot(0, bufs.group(), ud(0, Op::Recv));
        (ring, bufs)
    }

    fn drained(ring: &mut Ring) -> Vec<Completion> {
        let mut out = Vec::new();
        ring.drain_completions(&mut out);
        out
    }

    #[test]
    fn completion_flags_read_as_the_kernel_s() {
        let (mut ring, mut bufs) = receiving(2);
        let id = bufs.kernel_fill(b"abcde").unwrap();
        ring.kernel_complete(0, 5, true, Some(id));
        let mut out = drained(&mut ring);
        assert_eq!(out[1].user_data, ud(0, Op::Recv));
        assert!(out[1].more());
        assert_eq!(out[1].buffer_id(), Some(id));
        assert_eq!(
            ring.kernel_pending().len(),
            1,
            "a multishot with MORE stays"
        );
        let mut buf = bufs.take(&mut out[1]).expect("handed over");
        assert_eq!(buf.bytes_mut(), b"abcde");
        bufs.recycle(buf);
        ring.kernel_complete(0, -libc::ENOBUFS, false, None);
        let out = drained(&mut ring);
        assert!(!out[0].more());
        assert_eq!(out[0].buffer_id(), None);
        assert!(ring.kernel_pending().is_empty());
    }

    #[test]
    fn cancel_ends_its_targets_and_a_close_frees_the_slot() {
        let mut ring = Ring::simulated(1);
        ring.accept_one(0, 1);
        assert_eq!(ring.kernel_accept(0, false), Some(0));
        ring.recv_multishot(0, 0, 2);
        ring.cancel(2, 8);
        ring.kernel_cancel(1);
        let out = drained(&mut ring);
        let results: Vec<(u64, i32)> = out.iter().map(|c| (c.user_data, c.result)).collect();
        assert_eq!(results, [(1, 0), (2, -libc::ECANCELED), (8, 0)]);
        ring.close_fixed(0, 5);
        ring.kernel_close(0);
        assert_eq!(ring.kernel_files_in_use(), 0);
    }

    #[test]
    #[should_panic(expected = "still in flight")]
    fn closing_a_descriptor_with_a_receive_armed_is_caught() {
        let (mut ring, _bufs) = receiving(2);
        ring.close_fixed(0, ud(0, Op::Close));
    }

    #[test]
    fn buffers_are_lent_once_against_their_completion_and_come_back() {
        let (mut ring, mut bufs) = receiving(2);
        let a = bufs.kernel_fill(b"abc").unwrap();
        ring.kernel_complete(0, 3, true, Some(a));
        let b = bufs.kernel_fill(b"de").unwrap();
        ring.kernel_complete(0, 2, true, Some(b));
        assert_eq!(bufs.kernel_fill(b"x"), None, "both in use");
        let mut out = drained(&mut ring);
        let mut first = bufs.take(&mut out[1]).expect("lent");
        assert_eq!(first.id(), a);
        assert_eq!(first.bytes_mut(), b"abc");
        assert!(bufs.take(&mut out[1]).is_none(), "the hand-over is spent");
        let second = bufs.take(&mut out[2]).expect("lent");
        assert_eq!(second.id(), b);
        assert_eq!(bufs.kernel_out(), 2);
        bufs.recycle(first);
        bufs.recycle(second);
        assert_eq!(bufs.kernel_out(), 0);
    }

    #[test]
    #[should_panic(expected = "another ring's completion")]
    fn a_completion_of_another_ring_lends_nothing() {
        let (_ring, mut bufs) = receiving(2);
        let (mut other, mut other_bufs) = receiving(2);
        let id = other_bufs.kernel_fill(b"abc").unwrap();
        other.kernel_complete(0, 3, true, Some(id));
        let mut out = drained(&mut other);
        let _ = bufs.take(&mut out[1]);
    }

    #[test]
    #[should_panic(expected = "lent by another buffer ring")]
    fn recycle_takes_back_only_its_own_buffers() {
        let (_ring, mut bufs) = receiving(2);
        let (mut other, mut other_bufs) = receiving(2);
        let id = other_bufs.kernel_fill(b"abc").unwrap();
        other.kernel_complete(0, 3, true, Some(id));
        let buf = other_bufs.take(&mut drained(&mut other)[1]).unwrap();
        bufs.recycle(buf);
    }

    #[test]
    fn a_ring_serves_one_buffer_ring() {
        let ring = Ring::simulated(1);
        let _bufs = BufRing::new(&ring, 0, 4, 64).unwrap();
        let err = BufRing::new(&ring, 1, 4, 64).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn a_send_is_ended_by_its_own_completion_only() {
        let mut ring = Ring::simulated(2);
        for slot in 0..2 {
            ring.accept_one(0, ud(slot, Op::AcceptOne));
            ring.kernel_accept(0, false);
        }
        let mut pool = BufferPool::default();
        let (mut q0, mut q1) = (SendQueue::new(), SendQueue::new());
        q0.push_shared(Arc::from(&b"hello"[..]));
        q1.push_shared(Arc::from(&b"world"[..]));
        assert!(ring.send_queue(0, &mut q0, ud(0, Op::Send)));
        assert!(
            !ring.send_queue(0, &mut q1, ud(0, Op::Send)),
            "one send in flight per key"
        );
        assert!(ring.send_queue(1, &mut q1, ud(1, Op::Send)));
        let pending = ring.kernel_pending();
        assert_eq!(
            pending[0].op,
            SimOp::Send {
                file_index: 0,
                bytes: b"hello".to_vec()
            }
        );
        // Key 1's send completes first: its completion cannot end key 0's.
        ring.kernel_complete(1, 5, false, None);
        ring.kernel_complete(0, 2, false, None);
        let mut out = drained(&mut ring);
        let stray = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q0.complete_send(&mut out[2], &mut pool);
        }));
        assert!(stray.is_err(), "another send's completion ended this one");
        q1.complete_send(&mut out[2], &mut pool);
        q0.complete_send(&mut out[3], &mut pool);
        assert!(q1.is_empty());
        assert_eq!(q0.queued_bytes(), 3, "a short send leaves the rest");
        // Spent: the same completion cannot end the next send.
        assert!(ring.send_queue(0, &mut q0, ud(0, Op::Send)));
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q0.complete_send(&mut out[3], &mut pool);
        }));
        assert!(again.is_err(), "a completion ended two sends");
    }

    #[test]
    #[should_panic(expected = "reserved to Ring::send_queue")]
    fn a_send_user_data_is_refused_for_other_operations() {
        let (mut ring, _bufs) = receiving(2);
        ring.shutdown(0, libc::SHUT_WR, ud(0, Op::Send));
    }
}
