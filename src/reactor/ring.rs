//! One io_uring per worker: setup with flag fallback, safe builders for the operations the server uses,
//! submission and completion draining.
//!
//! Every submission that references memory (the multishot tick's timespec, a send's `msghdr`) takes that
//! memory from a reactor-owned type whose lifetime rule is documented where it is created. This module must
//! never block anywhere but in `submit_and_wait`.
//!
//! The contract with the kernel is held by the types, so that safe code cannot alias memory the kernel
//! owns:
//! - A [`Completion`] is minted only by [`Ring::drain_completions`] (a private field; neither `Copy` nor
//!   `Clone`) and carries a one-shot `Handover`: the provided buffer the kernel filled, or the end of one
//!   send this ring submitted. [`BufRing::take`](super::BufRing::take) and
//!   [`SendQueue::complete_send`](super::SendQueue::complete_send) move it out, so each is redeemed once.
//! - A send's completion is recognised by its `user_data`: the low byte [`Op::Send`] is reserved to
//!   [`Ring::send_queue`] (every other submission, and every doorbell posted, refuses it), and one send per
//!   key (the high 32 bits, below the fixed-file table's size) is in flight on a ring at a time: a bit per
//!   key, no number stored per key ([`SendsInFlight`] says how a send is told from every other).
//! - The ring keeps the memory of the buffer ring registered with it (one per ring) mapped until after the
//!   io_uring itself is closed ([`Ring`]'s `Drop`), whatever order their owners drop them in.

use std::cell::OnceCell;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::buf_ring::Region;
use super::send::{SendOp, SendQueue};
use super::Op;

/// Source of ring identities: each [`Ring`] gets its own, never reused in the process.
static NEXT_RING_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh ring identity (also for simulated rings, which must never share one with a real ring).
pub(super) fn next_ring_id() -> u64 {
    NEXT_RING_ID.fetch_add(1, Ordering::Relaxed)
}

/// Whether `user_data` is reserved to sends (low byte [`Op::Send`]).
fn is_send(user_data: u64) -> bool {
    (user_data & 0xff) as u8 == Op::Send as u8
}

/// Refuses a `user_data` reserved to sends for any other submission: its completion would pass for the
/// end of a send and free buffers the kernel still reads.
fn not_a_send(user_data: u64) {
    assert!(
        !is_send(user_data),
        "user_data {user_data:#x} is reserved to Ring::send_queue (operation Send)"
    );
}

/// Smallest submission queue [`Ring::new`] falls back to under memory pressure.
pub const MIN_SQ_ENTRIES: u32 = 256;
/// Smallest completion queue [`Ring::new`] falls back to under memory pressure.
pub const MIN_CQ_ENTRIES: u32 = 512;

/// The next queue sizes to try after `ENOMEM`: both halved, not below the minimums; `None` once both
/// are at their minimum.
fn smaller_sizes(sq: u32, cq: u32) -> Option<(u32, u32)> {
    if sq <= MIN_SQ_ENTRIES && cq <= MIN_CQ_ENTRIES {
        return None;
    }
    Some((
        (sq / 2).max(MIN_SQ_ENTRIES).min(sq),
        (cq / 2).max(MIN_CQ_ENTRIES).min(cq),
    ))
}

/// Which setup flags the kernel accepted, for the startup log line.
#[derive(Debug, Clone, Default)]
pub struct RingSetup {
    pub single_issuer: bool,
    pub defer_taskrun: bool,
    pub submit_all: bool,
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub fixed_files: u32,
    /// The queue sizes asked for, when memory pressure (`ENOMEM`) forced smaller ones.
    pub shrunk_from: Option<(u32, u32)>,
}

impl std::fmt::Display for RingSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut flags = Vec::new();
        if self.single_issuer {
            flags.push("SINGLE_ISSUER");
        }
        if self.defer_taskrun {
            flags.push("DEFER_TASKRUN");
        }
        if self.submit_all {
            flags.push("SUBMIT_ALL");
        }
        write!(
            f,
            "{} sq={} cq={} fixed_files={}",
            if flags.is_empty() {
                "none".to_string()
            } else {
                flags.join("|")
            },
            self.sq_entries,
            self.cq_entries,
            self.fixed_files
        )?;
        if let Some((sq, cq)) = self.shrunk_from {
            write!(f, " (shrunk from sq={sq} cq={cq}: out of memory)")?;
        }
        Ok(())
    }
}

/// What the kernel handed back with a completion, redeemed once: moved out (left [`Handover::None`]) by
/// [`BufRing::take`](super::BufRing::take) or [`SendQueue::complete_send`](super::SendQueue::complete_send).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Handover {
    None,
    /// Provided buffer `id` of the buffer ring registered with ring `ring`, filled with `len` bytes.
    Buffer {
        ring: u64,
        id: u16,
        len: usize,
    },
    /// The end of the send of key `key` on ring `ring`, the `end`-th send end that ring handed over: the
    /// kernel reads none of that send's memory any more (see [`SendsInFlight`]).
    Send {
        ring: u64,
        key: u32,
        end: u64,
    },
}

/// Which keys of a ring have a send in flight: one bit per key (the high 32 bits of a send's `user_data`,
/// below the fixed-file table's size), and the count of send ends handed over so far. Zeroed pages: a
/// word of bits is committed only where its keys are used.
///
/// How a send's end is told from any other without a number stored per key: a send of key `k` is submitted
/// only while `k`'s bit is clear, with the count of ends so far (`after`, kept by its queue), and sets the
/// bit; the next end handed over for `k` clears it and is numbered `count + 1`. So the first end of `k`
/// numbered above a queue's `after` is that queue's own send's, and any later one comes after it: a queue
/// accepts an end of its ring and key numbered above its `after` (by then the kernel is done with its
/// send), and refuses an earlier end of that key (a spent or unredeemed one: numbered at or below
/// `after`), another key's and another ring's. The count is a `u64`: it never wraps.
pub(super) struct SendsInFlight {
    bits: Box<[u64]>,
    ends: u64,
}

impl SendsInFlight {
    pub(super) fn new(keys: usize) -> SendsInFlight {
        SendsInFlight {
            bits: vec![0; keys.div_ceil(64)].into_boxed_slice(),
            ends: 0,
        }
    }

    /// Whether key `key` has a send in flight.
    pub(super) fn in_flight(&self, key: usize) -> bool {
        self.bits[key / 64] & (1 << (key % 64)) != 0
    }

    /// Send ends handed over so far (a send submitted now is stamped with it).
    pub(super) fn ends(&self) -> u64 {
        self.ends
    }

    /// A send of `key` was submitted.
    pub(super) fn begin(&mut self, key: usize) {
        self.bits[key / 64] |= 1 << (key % 64);
    }

    /// The completion of a send of `key` arrived: the hand-over that ends it, if `key` has one in flight.
    pub(super) fn end(&mut self, ring: u64, key: usize) -> Handover {
        match self.bits.get_mut(key / 64) {
            Some(word) if *word & (1 << (key % 64)) != 0 => {
                *word &= !(1 << (key % 64));
                self.ends += 1;
                Handover::Send {
                    ring,
                    key: key as u32,
                    end: self.ends,
                }
            }
            _ => Handover::None,
        }
    }

    /// Bytes held per key (for the size test).
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.bits)
    }
}

/// A completion copied out of the completion queue.
///
/// The public fields are a copy of the kernel's entry, free to read (and to change: nothing relies on
/// them). What the kernel handed over (a provided buffer, the end of a send) is held privately and
/// redeemed once, so a completion can be neither made up nor copied outside the reactor:
///
/// ```compile_fail
/// let forged = ringws::reactor::Completion { user_data: 3, result: 1, flags: 1 };
/// ```
///
/// ```compile_fail
/// fn twice(c: ringws::reactor::Completion) -> (ringws::reactor::Completion, ringws::reactor::Completion) {
///     (c.clone(), c)
/// }
/// ```
#[derive(Debug)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
    pub(super) handover: Handover,
}

impl Completion {
    /// A completion with what the kernel handed over: only for [`Ring::drain_completions`], a simulated
    /// ring and the reactor's tests.
    pub(super) fn handed_over(
        user_data: u64,
        result: i32,
        flags: u32,
        handover: Handover,
    ) -> Completion {
        Completion {
            user_data,
            result,
            flags,
            handover,
        }
    }

    /// Whether a multishot request stays armed after this completion.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer this completion filled and that is not taken yet, if any.
    pub fn buffer_id(&self) -> Option<u16> {
        match self.handover {
            Handover::Buffer { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// A worker's ring. Not `Send`: with `SINGLE_ISSUER` only the creating thread may submit.
///
/// Dropping it closes the io_uring first, then frees what the kernel may use until then (the tick's
/// timespec, the buffer ring's memory), whatever the order its owner drops it and the
/// [`BufRing`](super::BufRing) in:
///
/// ```no_run
/// use ringws::reactor::{BufRing, Ring};
/// let ring = Ring::new(64, 128, 16)?;
/// let bufs = BufRing::new(&ring, 0, 16, 4096)?;
/// drop(bufs); // the buffers stay mapped: the kernel may still fill them
/// drop(ring); // closes the io_uring, then unmaps them
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Ring {
    /// Closed first, in `Drop`, before anything the kernel may read or write is freed.
    ring: ManuallyDrop<IoUring>,
    /// This ring's identity, stamped on what its completions hand over.
    id: u64,
    setup: RingSetup,
    /// The tick's interval; the kernel reads it for every expiry of the multishot timeout, so it lives
    /// (boxed, at a stable address) as long as the ring.
    tick_interval: Box<types::Timespec>,
    /// The memory of the buffer ring registered with this ring (at most one), kept mapped until the
    /// io_uring is closed.
    buffers: OnceCell<Rc<Region>>,
    /// The keys with a send in flight.
    sends: SendsInFlight,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `self.ring` is dropped here once and never used again (this is `drop`); the other
        // fields, which the kernel may use until the io_uring is closed, are dropped after it.
        unsafe { ManuallyDrop::drop(&mut self.ring) }
    }
}

impl Ring {
    /// Creates a ring with SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL and a sparse fixed-file table of
    /// `fixed_files` slots, falling back to fewer flags when the kernel refuses them, and to smaller
    /// queues (halved, down to [`MIN_SQ_ENTRIES`] / [`MIN_CQ_ENTRIES`]) when it is out of memory for
    /// them (both logged by the caller from [`Ring::setup`]). A smaller CQ costs no completions: the
    /// kernel keeps overflowed ones until the CQ has room.
    pub fn new(sq_entries: u32, cq_entries: u32, fixed_files: u32) -> io::Result<Ring> {
        let (mut sq, mut cq) = (sq_entries, cq_entries);
        loop {
            match Ring::with_sizes(sq, cq, fixed_files) {
                Ok(mut ring) => {
                    if (sq, cq) != (sq_entries, cq_entries) {
                        ring.setup.shrunk_from = Some((sq_entries, cq_entries));
                    }
                    return Ok(ring);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => match smaller_sizes(sq, cq) {
                    Some((s, c)) => (sq, cq) = (s, c),
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }

    fn with_sizes(sq_entries: u32, cq_entries: u32, fixed_files: u32) -> io::Result<Ring> {
        let attempts: [(bool, bool, bool); 4] = [
            (true, true, true),
            (true, true, false),
            (true, false, false),
            (false, false, false),
        ];
        let mut last_err = None;
        for (single_issuer, defer_taskrun, submit_all) in attempts {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq_entries);
            if single_issuer {
                builder.setup_single_issuer();
            }
            if defer_taskrun {
                builder.setup_defer_taskrun();
            }
            if submit_all {
                builder.setup_submit_all();
            }
            match builder.build(sq_entries) {
                Ok(ring) => {
                    ring.submitter().register_files_sparse(fixed_files)?;
                    let setup = RingSetup {
                        single_issuer,
                        defer_taskrun,
                        submit_all,
                        sq_entries: ring.params().sq_entries(),
                        cq_entries: ring.params().cq_entries(),
                        fixed_files,
                        shrunk_from: None,
                    };
                    return Ok(Ring {
                        ring: ManuallyDrop::new(ring),
                        id: next_ring_id(),
                        setup,
                        tick_interval: Box::new(types::Timespec::new()),
                        buffers: OnceCell::new(),
                        sends: SendsInFlight::new(fixed_files as usize),
                    });
                }
                // Out of memory is not a refused flag: fewer flags would not help.
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => return Err(e),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
    }

    pub fn setup(&self) -> &RingSetup {
        &self.setup
    }

    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    pub(super) fn inner(&self) -> &IoUring {
        &self.ring
    }

    /// This ring's identity.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Keeps a buffer ring's memory mapped until after the io_uring is closed. Refused (false) once a
    /// buffer ring is registered: a completion does not say which group its buffer came from, so a ring
    /// serves one.
    pub(super) fn keep_buffers(&self, region: Rc<Region>) -> bool {
        self.buffers.set(region).is_ok()
    }

    /// Whether a buffer ring is registered with this ring.
    pub(super) fn has_buffers(&self) -> bool {
        self.buffers.get().is_some()
    }

    /// Queues one entry, submitting first if the submission queue is full.
    ///
    /// # Safety
    /// Every buffer the entry points to must stay valid until its completion (or, for multishot requests,
    /// its final completion) is reaped.
    unsafe fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: forwarded from the caller's contract.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // Queue full: hand what we have to the kernel and retry.
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EINTR) {
                    tracing::error!("io_uring submit failed: {e}");
                }
            }
        }
    }

    /// Multishot accept on `listener`, each connection installed directly into the fixed-file table.
    pub fn accept_multishot(&mut self, listener: RawFd, user_data: u64) {
        not_a_send(user_data);
        let entry = opcode::AcceptMulti::new(types::Fd(listener))
            .allocate_file_index(true)
            .build()
            .user_data(user_data);
        // SAFETY: a multishot accept without an address buffer references no user memory.
        unsafe { self.push(entry) }
    }

    /// One accept on `listener`, installed into a free fixed-file slot (used near the table's capacity,
    /// where each accept must be matched by a free slot).
    pub fn accept_one(&mut self, listener: RawFd, user_data: u64) {
        not_a_send(user_data);
        let entry = opcode::Accept::new(
            types::Fd(listener),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .file_index(Some(types::DestinationSlot::auto_target()))
        .build()
        .user_data(user_data);
        // SAFETY: no address buffer is passed (null pointers), so no user memory is referenced.
        unsafe { self.push(entry) }
    }

    /// Multishot receive on direct descriptor `file_index` into buffers of group `buf_group`.
    pub fn recv_multishot(&mut self, file_index: u32, buf_group: u16, user_data: u64) {
        not_a_send(user_data);
        let entry = opcode::RecvMulti::new(types::Fixed(file_index), buf_group)
            .build()
            .user_data(user_data);
        // SAFETY: buffers come from the provided buffer ring, which lives as long as the ring
        // (see `BufRing`); no other memory is referenced.
        unsafe { self.push(entry) }
    }

    /// One receive on direct descriptor `file_index` into one buffer of group `buf_group` (at most a
    /// buffer's worth): the receive of a connection whose input is taken a buffer per turn.
    pub fn recv_once(&mut self, file_index: u32, buf_group: u16, user_data: u64) {
        not_a_send(user_data);
        let entry = opcode::Recv::new(types::Fixed(file_index), std::ptr::null_mut(), 0)
            .buf_group(buf_group)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(user_data);
        // SAFETY: the buffer comes from the provided buffer ring, which lives as long as the ring (see
        // `BufRing`); no other memory is referenced (the null address is never used with BUFFER_SELECT).
        unsafe { self.push(entry) }
    }

    /// Submits the next part of `queue` on direct descriptor `file_index`: one `send` for a single chunk, one
    /// vectored `sendmsg` for several. Returns false when the queue has nothing to send or a send is
    /// already in flight (on this queue, or for this `user_data`'s key on this ring). Its completion ends
    /// the send through [`SendQueue::complete_send`].
    ///
    /// # Panics
    /// If `user_data`'s operation (low byte) is not [`Op::Send`] or its key (high 32 bits) is not below the
    /// ring's fixed-file table size.
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
        let entry = match queue.prepare_send(self.id, key as u32, self.sends.ends()) {
            None => return false,
            Some(SendOp::Single(ptr, len)) => {
                opcode::Send::new(types::Fixed(file_index), ptr, len as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            Some(SendOp::Vectored(msg)) => opcode::SendMsg::new(types::Fixed(file_index), msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build(),
        };
        self.sends.begin(key);
        // SAFETY: `prepare_send` marked the queue in flight as a send of `key` on this ring, stamped with
        // the ends handed over so far: the bytes of a single send, or the `msghdr`, its iovec array and
        // every chunk they point to, are kept alive and unmoved until `SendQueue::complete_send` is given
        // an end of this ring and key numbered above that stamp, which is this send's own completion or
        // comes after it (no other submission may use a `user_data` of operation Send, and no other send
        // of this key is in flight: `SendsInFlight`); a queue dropped while in flight leaks them instead
        // of freeing (see `SendQueue`).
        unsafe { self.push(entry.user_data(user_data)) }
        true
    }

    /// `shutdown(2)` on direct descriptor `file_index`.
    pub fn shutdown(&mut self, file_index: u32, how: i32, user_data: u64) {
        not_a_send(user_data);
        let entry = opcode::Shutdown::new(types::Fixed(file_index), how)
            .build()
            .user_data(user_data);
        // SAFETY: references no user memory.
        unsafe { self.push(entry) }
    }

    /// Sets TCP_QUICKACK on direct descriptor `file_index`: an acknowledgement the kernel is delaying goes
    /// out now (`tcp_cleanup_rbuf`). Issued inline (a socket command), its completion carries nothing.
    pub fn quick_ack(&mut self, file_index: u32, user_data: u64) {
        not_a_send(user_data);
        static ONE: libc::c_int = 1;
        let entry = opcode::SetSockOpt::new(
            types::Fixed(file_index),
            libc::IPPROTO_TCP as u32,
            libc::TCP_QUICKACK as u32,
            &ONE as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
        .build()
        .user_data(user_data);
        // SAFETY: the option value is a static, alive for the whole process, and never written.
        unsafe { self.push(entry) }
    }

    /// Closes direct descriptor `file_index`, freeing its fixed-file table entry.
    pub fn close_fixed(&mut self, file_index: u32, user_data: u64) {
        not_a_send(user_data);
        let entry = opcode::Close::new(types::Fixed(file_index))
            .build()
            .user_data(user_data);
        // SAFETY: references no user memory.
        unsafe { self.push(entry) }
    }

    /// Installs the direct descriptor `file_index` as a regular descriptor (close-on-exec) of this
    /// process: the completion's result is the new descriptor, which the caller owns and closes. Issued
    /// at once by the kernel, so it sees the slot as it is at submission, before a close submitted after it.
    pub fn install_fd(&mut self, file_index: u32, user_data: u64) {
        not_a_send(user_data);
        let entry = opcode::FixedFdInstall::new(types::Fixed(file_index), 0)
            .build()
            .user_data(user_data);
        // SAFETY: references no user memory.
        unsafe { self.push(entry) }
    }

    /// Closes a regular file descriptor through the ring.
    pub fn close_fd(&mut self, fd: RawFd, user_data: u64) {
        not_a_send(user_data);
        let entry = opcode::Close::new(types::Fd(fd))
            .build()
            .user_data(user_data);
        // SAFETY: references no user memory.
        unsafe { self.push(entry) }
    }

    /// Cancels every request whose `user_data` equals `target`.
    pub fn cancel(&mut self, target: u64, user_data: u64) {
        not_a_send(user_data);
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        // SAFETY: references no user memory.
        unsafe { self.push(entry) }
    }

    /// Arms a multishot timeout that completes every `interval` until the kernel ends it (a completion
    /// without `IORING_CQE_F_MORE`, e.g. on a full completion queue); the worker then arms it again.
    pub fn tick_every(&mut self, interval: std::time::Duration, user_data: u64) {
        not_a_send(user_data);
        *self.tick_interval = types::Timespec::from(interval);
        let entry = opcode::Timeout::new(&*self.tick_interval as *const types::Timespec)
            .flags(types::TimeoutFlags::MULTISHOT)
            .build()
            .user_data(user_data);
        // SAFETY: the timespec is boxed inside `self` and never freed or moved before the ring is dropped.
        unsafe { self.push(entry) }
    }

    /// Posts a completion with `user_data` and `value` on another ring (`MSG_RING`), waking it.
    pub fn ring_doorbell(
        &mut self,
        target_ring_fd: RawFd,
        value: i32,
        user_data: u64,
        own_user_data: u64,
    ) {
        not_a_send(user_data);
        not_a_send(own_user_data);
        let entry = opcode::MsgRingData::new(types::Fd(target_ring_fd), value, user_data, None)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(own_user_data);
        // SAFETY: references no user memory.
        unsafe { self.push(entry) }
    }

    /// Completions posted and not drained yet (tests of the real ring).
    #[cfg(all(test, not(feature = "sim-ring")))]
    pub(crate) fn completions_waiting(&mut self) -> usize {
        let mut cq = self.ring.completion();
        cq.sync();
        cq.len()
    }

    /// Submits queued entries and waits for at least `want` completions.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        match self.ring.submit_and_wait(want) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Submits queued entries and collects the completions ready now, without waiting for one: the
    /// kernel's deferred work (DEFER_TASKRUN: the completions of receives, accepts and sends armed
    /// earlier) runs only in an enter that asks for completions, which `submit_and_wait(0)` does not.
    pub fn submit_and_reap(&mut self) -> io::Result<()> {
        let zero = types::Timespec::new();
        let args = types::SubmitArgs::new().timespec(&zero);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves every available completion into `out` (which keeps its capacity between calls), each with
    /// what the kernel handed over: the provided buffer it filled, or the end of a send of this ring.
    pub fn drain_completions(&mut self, out: &mut Vec<Completion>) {
        self.drain_completions_up_to(out, usize::MAX);
    }

    /// [`Ring::drain_completions`], but at most `max` of them: the rest stay in the completion queue for
    /// the next call, in order (a caller that bounds its batches bounds its vector: one burst of
    /// completions does not leave it at the burst's size).
    pub fn drain_completions_up_to(&mut self, out: &mut Vec<Completion>, max: usize) {
        let id = self.id;
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in (&mut cq).take(max) {
            let (user_data, result, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            let handover = if let Some(buffer) = cqueue::buffer_select(flags) {
                Handover::Buffer {
                    ring: id,
                    id: buffer,
                    len: result.max(0) as usize,
                }
            } else if is_send(user_data) {
                // Only `send_queue` submits this operation, one per key at a time: this ends it.
                self.sends.end(id, (user_data >> 32) as usize)
            } else {
                Handover::None
            };
            out.push(Completion::handed_over(user_data, result, flags, handover));
        }
    }
}

/// A ring used only to ring other rings' doorbells from threads that have no worker ring (the main
/// thread on shutdown, library callers publishing from any thread).
pub struct DoorbellRing {
    ring: IoUring,
}

impl DoorbellRing {
    pub fn new() -> io::Result<DoorbellRing> {
        Ok(DoorbellRing {
            ring: IoUring::new(64)?,
        })
    }

    /// Posts a completion with `user_data` and `value` to the ring `target_ring_fd` and waits for the
    /// message to be delivered. A `user_data` of operation [`Op::Send`] is refused (`InvalidInput`): it
    /// would pass for the end of a send of that ring.
    pub fn ring(&mut self, target_ring_fd: RawFd, value: i32, user_data: u64) -> io::Result<()> {
        if is_send(user_data) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a doorbell's user_data may not have the operation Send",
            ));
        }
        let entry =
            opcode::MsgRingData::new(types::Fd(target_ring_fd), value, user_data, None).build();
        // SAFETY: references no user memory.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("doorbell queue full"))?;
        self.ring.submit_and_wait(1)?;
        let result = self
            .ring
            .completion()
            .next()
            .map(|c| c.result())
            .unwrap_or(0);
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        Ok(())
    }
}

/// Test helpers shared by the reactor's tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::{Completion, Ring};

    /// One end of a socket pair installed in `ring`'s fixed-file slot 0; returns the other end.
    pub(crate) fn socket_in_slot_zero(ring: &Ring) -> (UnixStream, UnixStream) {
        let (ours, peer) = UnixStream::pair().expect("socketpair");
        ring.inner()
            .submitter()
            .register_files_update(0, &[ours.as_raw_fd()])
            .expect("install the socket in the fixed-file table");
        (ours, peer)
    }

    /// Submits, then waits (a few seconds at most) until `ring` has posted a completion with `user_data`.
    pub(in crate::reactor) fn wait_for(ring: &mut Ring, user_data: u64) -> Completion {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = Vec::new();
        // Waits with a timeout (a ring with DEFER_TASKRUN posts completions only while waited on).
        let timeout = io_uring::types::Timespec::from(std::time::Duration::from_millis(10));
        let args = io_uring::types::SubmitArgs::new().timespec(&timeout);
        while std::time::Instant::now() < deadline {
            match ring.inner().submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) => panic!("io_uring_enter: {e}"),
            }
            ring.drain_completions(&mut seen);
            if let Some(i) = seen.iter().position(|c| c.user_data == user_data) {
                return seen.swap_remove(i);
            }
        }
        panic!("no completion for {user_data:#x}: {seen:?}");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::testing::{socket_in_slot_zero, wait_for};
    use super::*;
    use crate::reactor::{BufferPool, UserData};

    fn send_ud(key: u32) -> u64 {
        UserData::new(key, 1, Op::Send).encode()
    }

    #[test]
    fn a_send_is_ended_by_its_own_completion_only() {
        let mut ring = Ring::new(8, 16, 4).expect("io_uring");
        let (_ours, mut peer) = socket_in_slot_zero(&ring);
        let mut pool = BufferPool::default();
        let mut queue = SendQueue::new();
        queue.push_owned(&mut pool, 5, |b| b.extend_from_slice(b"hello"));
        assert!(ring.send_queue(0, &mut queue, send_ud(1)));
        assert!(queue.send_in_flight());
        // Another queue of the same key waits: one send per key is in flight, so its completion is known.
        let mut other = SendQueue::new();
        other.push_owned(&mut pool, 1, |b| b.push(b'!'));
        assert!(!ring.send_queue(0, &mut other, send_ud(1)));
        assert!(!other.send_in_flight());

        let mut done = wait_for(&mut ring, send_ud(1));
        assert_eq!(done.result, 5);
        assert!(matches!(done.handover, Handover::Send { .. }));
        queue.complete_send(&mut done, &mut pool);
        assert!(queue.is_empty() && !queue.send_in_flight());
        assert_eq!(done.handover, Handover::None, "redeemed once");
        let mut got = [0u8; 5];
        peer.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hello");

        // The key is free again, and the spent completion cannot end the next send.
        assert!(ring.send_queue(0, &mut other, send_ud(1)));
        let stray = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            other.complete_send(&mut done, &mut pool)
        }));
        assert!(stray.is_err(), "a spent completion ended a send in flight");
        assert!(other.send_in_flight());
        let mut done = wait_for(&mut ring, send_ud(1));
        other.complete_send(&mut done, &mut pool);
        assert!(other.is_empty());
    }

    /// A bounded drain takes completions in order and leaves the rest in the completion queue, so a
    /// caller's vector stays at the bound whatever the burst.
    #[test]
    fn a_drain_takes_at_most_max_and_leaves_the_rest_in_order() {
        let mut ring = Ring::new(16, 32, 4).expect("io_uring");
        // Shutdowns of an empty slot: each completes at once (an error), in submission order.
        for key in 0..12 {
            ring.shutdown(
                3,
                libc::SHUT_WR,
                UserData::new(key, 1, Op::Shutdown).encode(),
            );
        }
        let mut keys = Vec::new();
        let mut out = Vec::with_capacity(5);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while keys.len() < 12 && std::time::Instant::now() < deadline {
            ring.submit_and_wait(1).expect("submit");
            out.clear();
            ring.drain_completions_up_to(&mut out, 5);
            assert!(out.len() <= 5 && out.capacity() == 5, "{}", out.len());
            keys.extend(out.iter().map(|c| (c.user_data >> 32) as u32));
        }
        assert_eq!(keys, (0..12).collect::<Vec<u32>>());
    }

    /// What a ring keeps per fixed-file slot to know its sends: a bit (it was a 64-bit send number, 8
    /// bytes per slot, committed for every slot a connection used).
    #[test]
    fn sends_in_flight_cost_a_bit_per_key() {
        let keys = 20_000;
        let ring = Ring::new(8, 16, keys).expect("io_uring");
        let bytes = ring.sends.bytes();
        println!("send tracking: {bytes} bytes for {keys} keys");
        assert!(
            bytes <= keys as usize / 8 + 8,
            "{bytes} bytes for {keys} keys"
        );
    }

    /// The count of ends tells a send's end from every other end of its key: an end handed over before it
    /// was submitted (kept unredeemed) is refused, its own is accepted.
    #[test]
    fn an_end_of_the_same_key_from_before_the_send_is_refused() {
        let mut sends = SendsInFlight::new(64);
        let mut pool = BufferPool::default();
        let (mut first, mut second) = (SendQueue::new(), SendQueue::new());
        first.push_owned(&mut pool, 1, |b| b.push(b'a'));
        second.push_owned(&mut pool, 1, |b| b.push(b'b'));
        let key = 5;
        let end_of = |sends: &mut SendsInFlight| {
            let handover = sends.end(7, key);
            Completion::handed_over(send_ud(key as u32), 1, 0, handover)
        };
        assert!(first.prepare_send(7, key as u32, sends.ends()).is_some());
        sends.begin(key);
        assert!(sends.in_flight(key));
        let mut first_end = end_of(&mut sends);
        assert!(!sends.in_flight(key));
        assert_eq!(
            end_of(&mut sends).handover,
            Handover::None,
            "nothing in flight"
        );
        // The first queue's end is kept; the key's next send belongs to another queue.
        assert!(second.prepare_send(7, key as u32, sends.ends()).is_some());
        sends.begin(key);
        let stale = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            second.complete_send(&mut first_end, &mut pool)
        }));
        assert!(
            stale.is_err(),
            "an earlier end of the key ended a later send"
        );
        assert!(second.send_in_flight());
        let mut second_end = end_of(&mut sends);
        second.complete_send(&mut second_end, &mut pool);
        first.complete_send(&mut first_end, &mut pool);
        assert!(!first.send_in_flight() && !second.send_in_flight());
    }

    #[test]
    fn no_other_operation_may_use_a_send_user_data() {
        let mut ring = Ring::new(8, 16, 4).expect("io_uring");
        // Its completion would pass for the end of the send of key 1.
        for submit in [
            (|r: &mut Ring| r.cancel(0, send_ud(1))) as fn(&mut Ring),
            |r| r.shutdown(0, libc::SHUT_WR, send_ud(1)),
            |r| r.close_fixed(0, send_ud(1)),
            |r| r.tick_every(std::time::Duration::from_secs(1), send_ud(1)),
            |r| r.recv_multishot(0, 0, send_ud(1)),
            |r| {
                let fd = r.fd();
                r.ring_doorbell(
                    fd,
                    0,
                    send_ud(1),
                    UserData::new(NO_KEY, 0, Op::Ignore).encode(),
                )
            },
        ] {
            let refused =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| submit(&mut ring)));
            assert!(refused.is_err());
        }
        let mut doorbell = DoorbellRing::new().expect("io_uring");
        let err = doorbell
            .ring(ring.fd(), 0, send_ud(1))
            .expect_err("a doorbell posing as a send's completion");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        // Sends themselves need the operation Send and a key inside the fixed-file table.
        let mut pool = BufferPool::default();
        let mut queue = SendQueue::new();
        queue.push_owned(&mut pool, 1, |b| b.push(b'x'));
        for ud in [UserData::new(1, 1, Op::Close).encode(), send_ud(4)] {
            let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ring.send_queue(0, &mut queue, ud)
            }));
            assert!(refused.is_err());
            assert!(!queue.send_in_flight());
        }
    }

    const NO_KEY: u32 = crate::reactor::NO_CONNECTION;

    #[test]
    fn sizes_shrink_by_halves_to_the_minimums_then_stop() {
        let mut sizes = vec![(2048, 32768)];
        while let Some(next) = smaller_sizes(sizes.last().unwrap().0, sizes.last().unwrap().1) {
            sizes.push(next);
        }
        assert_eq!(
            sizes,
            [
                (2048, 32768),
                (1024, 16384),
                (512, 8192),
                (256, 4096),
                (256, 2048),
                (256, 1024),
                (256, 512)
            ]
        );
        // Sizes already below a minimum are not raised.
        assert_eq!(smaller_sizes(128, 4096), Some((128, 2048)));
        assert_eq!(smaller_sizes(128, 256), None);
    }
}
