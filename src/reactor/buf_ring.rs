//! The worker's provided buffer ring: a fixed set of equally sized receive buffers the kernel picks from
//! for multishot receives, so that idle connections own no buffer at all.
//!
//! Lifetime rule: the ring memory and the buffer memory are mapped here and stay mapped while any
//! [`RecvBuf`] handle, the owning [`BufRing`] or the [`Ring`] it is registered with exists (`Rc`); the
//! `Ring` keeps them until after its io_uring is closed, so no drop order can unmap memory the kernel may
//! still fill. A buffer is the kernel's until a completion hands it over; [`BufRing::take`] lends it
//! only against that completion (once: the completion's hand-over is moved out, and a bit per buffer
//! refuses a second loan), and [`BufRing::recycle`] takes back only a [`RecvBuf`] this ring lent and
//! re-publishes it to the kernel at once. This module must never hand out the same buffer twice, nor
//! publish one that is lent.
//!
//! Buffers are provided as they are needed, not all at once: the kernel takes buffers in ring order and
//! writes each one it takes, so every buffer in the ring is touched (made resident) as receives cycle
//! through it, even when a handful would do (a server that only ever receives handshakes and pings).
//! The ring starts with [`FIRST_PROVIDED`] buffers, and each receive that found it dry (`ENOBUFS`,
//! reported by the caller with [`BufRing::ran_dry`]) adds [`PROVIDE_CHUNK`] more, up to `count`; that
//! receive is re-armed by the caller as before. Under load the ring reaches its full count within a batch
//! or two; the hot path (`take`, `recycle`) does no extra work for it.
//!
//! Pages given back: once grown, the ring keeps cycling through all its buffers (the kernel takes them in
//! ring order), so a burst leaves every buffer's written pages resident for good. The worker's tick calls
//! [`BufRing::release_unused`]: every `every` calls, the pages of buffers that are back in the ring, still
//! ahead of the kernel's head, and were not received into during the last period are handed back
//! (`MADV_DONTNEED`). The hot path pays one bit per `take` for it.

use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use super::ring::{Completion, Handover, Ring};
use super::sys::Mapping;

/// Buffers a new ring provides (all of them if it has fewer): enough for handshakes and pings arriving
/// one at a time; each page the kernel writes in one stays resident.
pub const FIRST_PROVIDED: u16 = 4;

/// Buffers added for each receive that found the ring dry.
pub const PROVIDE_CHUNK: u16 = 16;

/// `IORING_REGISTER_PBUF_STATUS` (Linux 6.8): reads a provided buffer ring's head.
const IORING_REGISTER_PBUF_STATUS: libc::c_uint = 26;

/// `struct io_uring_buf_status`, the argument of `IORING_REGISTER_PBUF_STATUS`.
#[repr(C)]
struct BufStatus {
    buf_group: u32,
    head: u32,
    resv: [u32; 8],
}

/// The memory shared with the kernel: the ring of entries and the buffers.
pub(super) struct Region {
    entries: Mapping,
    buffers: Mapping,
}

/// One received buffer, lent by the ring until it is recycled. Made only by [`BufRing::take`]:
///
/// ```compile_fail
/// fn forge(b: ringws::reactor::RecvBuf) -> ringws::reactor::RecvBuf {
///     ringws::reactor::RecvBuf { id: 0, ..b }
/// }
/// ```
///
/// Dropping one instead of recycling it loses that buffer for the ring's lifetime (it is never
/// published again), which is never unsafe.
pub struct RecvBuf {
    region: Rc<Region>,
    id: u16,
    ptr: *mut u8,
    len: usize,
}

impl RecvBuf {
    /// The received bytes, writable (the protocol unmasks in place).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let _ = &self.region;
        // SAFETY: `ptr..ptr+len` lies inside buffer `id` of the mapping kept alive by `region`; the kernel
        // wrote it before posting the completion that handed it over and does not touch it again until
        // `recycle` re-publishes it; this handle is the only one for buffer `id` (its lent bit refuses a
        // second), and `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The buffer's id in its ring.
    pub fn id(&self) -> u16 {
        self.id
    }
}

/// The provided buffer ring of one worker (buffer group `group`), one per [`Ring`].
pub struct BufRing {
    region: Rc<Region>,
    /// The identity of the ring this buffer ring is registered with.
    ring: u64,
    group: u16,
    count: u16,
    buf_size: usize,
    /// Local copy of the tail we publish to the kernel.
    tail: u16,
    /// One bit per buffer: lent to a [`RecvBuf`].
    lent: Box<[u64]>,
    /// Buffers provided so far (ids `0..provided`); the others have never been published.
    provided: u16,
    /// One bit per buffer: received into (taken) since the last period of `release_unused`.
    touched: Box<[u64]>,
    /// One bit per buffer: received into before the last period and not given back since (its written
    /// pages may be resident).
    resident: Box<[u64]>,
    /// Scratch of `release_unused`, one bit per buffer: resident and not received into for a period;
    /// of those, the ones in the ring ahead of the kernel's head.
    unused: Box<[u64]>,
    releasing: Box<[u64]>,
    /// Calls of `release_unused` since its last period ended.
    calls: u32,
    /// Pages can be given back: the ring has `DEFER_TASKRUN` and the kernel reports the ring's head.
    can_release: bool,
}

impl BufRing {
    /// Maps `count` (a power of two, at most 32768) buffers of `buf_size` bytes (below 4 GiB) and
    /// registers them with `ring` as buffer group `group`. A ring serves one buffer ring (a completion does not say which
    /// group its buffer came from): a second is refused (`AlreadyExists`).
    pub fn new(ring: &Ring, group: u16, count: u16, buf_size: usize) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two <= 32768",
            ));
        }
        // The kernel's entries hold a 32-bit length, and the mapping's size must not wrap.
        let Some(mapped) = (count as usize)
            .checked_mul(buf_size)
            .filter(|_| buf_size > 0 && buf_size <= u32::MAX as usize)
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer size must be 1 to 4 GiB - 1 bytes, and all buffers addressable",
            ));
        };
        if ring.has_buffers() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a ring serves one buffer ring",
            ));
        }
        let entries = Mapping::new(count as usize * std::mem::size_of::<BufRingEntry>())?;
        let buffers = Mapping::new(mapped)?;
        // SAFETY: the entries mapping is page aligned, sized for `count` entries, zero-filled (a valid
        // empty ring, tail 0), and outlives the registration: the `Region` is handed to `ring` right
        // after, which keeps it until its io_uring is closed.
        unsafe {
            ring.inner().submitter().register_buf_ring_with_flags(
                entries.ptr() as u64,
                count,
                group,
                0,
            )?;
        }
        let region = Rc::new(Region { entries, buffers });
        let kept = ring.keep_buffers(Rc::clone(&region));
        assert!(kept, "checked above: no buffer ring registered yet");
        let mut this = BufRing {
            region,
            ring: ring.id(),
            group,
            count,
            buf_size,
            tail: 0,
            lent: vec![0; (count as usize).div_ceil(64)].into_boxed_slice(),
            provided: 0,
            touched: vec![0; (count as usize).div_ceil(64)].into_boxed_slice(),
            resident: vec![0; (count as usize).div_ceil(64)].into_boxed_slice(),
            unused: vec![0; (count as usize).div_ceil(64)].into_boxed_slice(),
            releasing: vec![0; (count as usize).div_ceil(64)].into_boxed_slice(),
            calls: 0,
            can_release: ring.setup().defer_taskrun,
        };
        this.provide(FIRST_PROVIDED);
        this.commit();
        Ok(this)
    }

    /// A receive found the ring dry (`ENOBUFS`): provides [`PROVIDE_CHUNK`] buffers more, if the ring has
    /// any left that were never provided. The caller re-arms the receive.
    pub fn ran_dry(&mut self) {
        if self.provided < self.count {
            self.provide(PROVIDE_CHUNK);
            self.commit();
        }
    }

    /// Publishes up to `more` buffers never provided before (not committed).
    fn provide(&mut self, more: u16) {
        let end = self.provided.saturating_add(more).min(self.count);
        for id in self.provided..end {
            self.publish(id);
        }
        self.provided = end;
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Takes the buffer `completion` handed over (the kernel filled it and lets go of it until it is
    /// recycled); `None` if it carries none (or it was taken already). A buffer id alone lends nothing:
    ///
    /// ```compile_fail
    /// fn alias(bufs: &mut ringws::reactor::BufRing) -> ringws::reactor::RecvBuf {
    ///     bufs.take(0, 64)
    /// }
    /// ```
    ///
    /// # Panics
    /// If the completion came from another ring than the one this buffer ring is registered with, or the
    /// buffer is lent already (neither happens with completions of [`Ring::drain_completions`]).
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
            id < self.count && len <= self.buf_size,
            "buffer id or length out of range"
        );
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        assert!(self.lent[word] & bit == 0, "buffer {id} is lent already");
        self.lent[word] |= bit;
        self.touched[word] |= bit;
        completion.handover = Handover::None;
        // SAFETY: `id < count` so the offset stays inside the buffer mapping.
        let ptr = unsafe { self.region.buffers.ptr().add(id as usize * self.buf_size) };
        Some(RecvBuf {
            region: Rc::clone(&self.region),
            id,
            ptr,
            len,
        })
    }

    /// Gives a buffer back to the kernel.
    ///
    /// # Panics
    /// If `buf` was lent by another buffer ring.
    pub fn recycle(&mut self, buf: RecvBuf) {
        assert!(
            Rc::ptr_eq(&buf.region, &self.region),
            "a buffer lent by another buffer ring"
        );
        let (word, bit) = (buf.id as usize / 64, 1u64 << (buf.id % 64));
        assert!(self.lent[word] & bit != 0, "buffer {} is not lent", buf.id);
        self.lent[word] &= !bit;
        self.publish(buf.id);
        self.commit();
    }

    /// Called on each of the worker's ticks with the ring this buffer ring is registered with: every
    /// `every` calls (a period), gives back the pages of the buffers that were received into before the
    /// last period, not during it, and are in the ring now, ahead of the kernel's head. Returns the bytes
    /// advised away (0 between periods, or when the kernel cannot say where its head is).
    ///
    /// # Panics
    /// If `ring` is not the ring this buffer ring is registered with.
    pub fn release_unused(&mut self, ring: &Ring, every: u32) -> usize {
        assert_eq!(ring.id(), self.ring, "another ring's buffer ring");
        self.calls += 1;
        if self.calls < every.max(1) {
            return 0;
        }
        self.calls = 0;
        let mut any = false;
        for ((unused, resident), touched) in self
            .unused
            .iter_mut()
            .zip(self.resident.iter_mut())
            .zip(self.touched.iter_mut())
        {
            // Received into before the last period and not during it.
            *unused = *resident & !*touched;
            *resident |= *touched;
            *touched = 0;
            any |= *unused != 0;
        }
        if !any || !self.can_release {
            return 0;
        }
        let head = match self.kernel_head(ring) {
            Ok(head) => head,
            Err(_) => {
                self.can_release = false;
                return 0;
            }
        };
        // Only buffers in the ring, ahead of the kernel's head: one it took already may hold the bytes
        // of a completion not read yet, and a lent one is being read.
        self.releasing.fill(0);
        let base = self.region.entries.ptr() as *const BufRingEntry;
        let mut position = head;
        while position != self.tail {
            let index = (position & (self.count - 1)) as usize;
            // SAFETY: `index < count`, inside the entries mapping; the kernel only reads entries.
            let id = unsafe { (*base.add(index)).bid() };
            let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
            if self.unused[word] & bit != 0 && self.lent[word] & bit == 0 {
                self.releasing[word] |= bit;
            }
            position = position.wrapping_add(1);
        }
        let released = self.advise_away(&self.releasing);
        for (resident, releasing) in self.resident.iter_mut().zip(self.releasing.iter()) {
            *resident &= !*releasing;
        }
        released
    }

    /// The kernel's head of this buffer ring: the entries from it to our tail are the ones it has not
    /// taken yet.
    fn kernel_head(&self, ring: &Ring) -> io::Result<u16> {
        let mut status = BufStatus {
            buf_group: self.group as u32,
            head: 0,
            resv: [0; 8],
        };
        // SAFETY: `status` is a live, writable `io_uring_buf_status` for the duration of the call, the
        // one argument `IORING_REGISTER_PBUF_STATUS` reads the group from and writes the head to.
        let result = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                ring.fd(),
                IORING_REGISTER_PBUF_STATUS,
                &mut status as *mut BufStatus,
                1,
            )
        };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(status.head as u16)
    }

    /// `MADV_DONTNEED` on the whole pages inside each run of consecutive buffers of `ids` (a page shared
    /// with a buffer outside the run is left alone). Returns the bytes advised.
    fn advise_away(&self, ids: &[u64]) -> usize {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let buffers = self.region.buffers.ptr() as usize;
        let is_set = |id: usize| ids[id / 64] & (1 << (id % 64)) != 0;
        let mut advised = 0;
        let mut id = 0;
        let count = self.count as usize;
        while id < count {
            if !is_set(id) {
                id += 1;
                continue;
            }
            let first = id;
            while id < count && is_set(id) {
                id += 1;
            }
            let start = (buffers + first * self.buf_size).next_multiple_of(page);
            let end = (buffers + id * self.buf_size) / page * page;
            if end > start {
                // SAFETY: `start..end` lies inside the buffer mapping (whole pages of buffers `first..id`).
                // These buffers are neither lent nor taken by the kernel: each is in the ring ahead of the
                // kernel's head, which cannot move before our next `io_uring_enter` (with
                // `DEFER_TASKRUN` the kernel picks and fills provided buffers only inside that call, on
                // this thread; no receive goes to the kernel's io-wq threads, since sockets take
                // non-blocking issue and no receive is submitted with `IOSQE_ASYNC`), so nothing reads or
                // writes them now. On private anonymous memory,
                // `MADV_DONTNEED` drops the pages: the next write (the kernel's, filling the buffer
                // before a completion hands it over) finds a zero-filled page, and no one reads a
                // buffer before it is filled.
                let result = unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
                };
                if result == 0 {
                    advised += end - start;
                }
            }
        }
        advised
    }

    fn publish(&mut self, id: u16) {
        let index = (self.tail & (self.count - 1)) as usize;
        let base = self.region.entries.ptr() as *mut BufRingEntry;
        // SAFETY: `index < count`, so the entry lies inside the entries mapping; the kernel only reads
        // entries between its head and our published tail, and this one is past the tail until `commit`.
        let entry = unsafe { &mut *base.add(index) };
        // SAFETY: `id < count` so the address stays inside the buffer mapping.
        entry
            .set_addr(unsafe { self.region.buffers.ptr().add(id as usize * self.buf_size) } as u64);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    fn commit(&mut self) {
        let base = self.region.entries.ptr() as *const BufRingEntry;
        // SAFETY: `base` is the first entry of a live, page-aligned ring mapping, so its `resv` field is
        // the ring's tail; the kernel reads it atomically, so we store it with release ordering through
        // an `AtomicU16` of the same size and alignment.
        unsafe {
            let tail = BufRingEntry::tail(base) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::ring::testing::{socket_in_slot_zero, wait_for};
    use super::*;
    use crate::reactor::{Op, UserData};

    fn recv_ud() -> u64 {
        UserData::new(0, 1, Op::Recv).encode()
    }

    /// A completion handing over buffer `id` of `ring`'s buffer ring, as `drain_completions` mints it.
    fn handing_over(ring: &Ring, id: u16, len: usize) -> Completion {
        Completion::handed_over(
            recv_ud(),
            len as i32,
            0,
            Handover::Buffer {
                ring: ring.id(),
                id,
                len,
            },
        )
    }

    #[test]
    fn a_received_buffer_is_lent_once_against_its_completion() {
        let mut ring = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 4, 64).expect("buffer ring");
        let (_ours, mut peer) = socket_in_slot_zero(&ring);
        ring.recv_multishot(0, bufs.group(), recv_ud());
        peer.write_all(b"hello").expect("write");
        let mut done = wait_for(&mut ring, recv_ud());
        assert_eq!(done.result, 5);
        let id = done.buffer_id().expect("a provided buffer");
        let mut buf = bufs.take(&mut done).expect("lent against its completion");
        assert_eq!(buf.id(), id);
        assert_eq!(buf.bytes_mut(), b"hello");
        // The hand-over is spent: no second loan of the buffer from the same completion.
        assert_eq!(done.buffer_id(), None);
        assert!(bufs.take(&mut done).is_none());
        bufs.recycle(buf);
        // Given back, it is the kernel's again and comes back with the next receive.
        peer.write_all(b"again").expect("write");
        let mut done = wait_for(&mut ring, recv_ud());
        let mut buf = bufs.take(&mut done).expect("lent");
        assert_eq!(buf.bytes_mut(), b"again");
        bufs.recycle(buf);
    }

    #[test]
    fn receives_cycle_through_the_first_buffers_only_while_they_suffice() {
        let mut ring = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 64, 64).expect("buffer ring");
        assert_eq!(bufs.provided, FIRST_PROVIDED);
        let (_ours, mut peer) = socket_in_slot_zero(&ring);
        ring.recv_multishot(0, bufs.group(), recv_ud());
        // Each receive given back before the next, three laps of the first buffers: no buffer past them
        // is ever published, so the kernel never writes (touches) one.
        for round in 0..3 * FIRST_PROVIDED as usize {
            peer.write_all(b"ping").expect("write");
            let mut done = wait_for(&mut ring, recv_ud());
            assert!(done.more(), "the multishot receive goes on");
            let buf = bufs.take(&mut done).expect("lent");
            assert_eq!(buf.id(), (round % FIRST_PROVIDED as usize) as u16);
            bufs.recycle(buf);
        }
        assert_eq!(bufs.provided, FIRST_PROVIDED);
    }

    #[test]
    fn a_receive_that_finds_the_ring_dry_adds_a_chunk_of_buffers() {
        let mut ring = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 64, 64).expect("buffer ring");
        let (_ours, mut peer) = socket_in_slot_zero(&ring);
        ring.recv_multishot(0, bufs.group(), recv_ud());
        // Every provided buffer received into and kept: the ring is dry.
        let mut held = Vec::new();
        for _ in 0..FIRST_PROVIDED {
            peer.write_all(b"held").expect("write");
            let mut done = wait_for(&mut ring, recv_ud());
            held.push(bufs.take(&mut done).expect("lent"));
        }
        assert!(held.iter().all(|buf| buf.id() < FIRST_PROVIDED));
        peer.write_all(b"waits").expect("write");
        let done = wait_for(&mut ring, recv_ud());
        assert_eq!(done.result, -libc::ENOBUFS);
        assert!(!done.more(), "a dry ring ends the multishot receive");
        // One chunk more, the receive re-armed: the waiting bytes land in a buffer never provided before.
        bufs.ran_dry();
        assert_eq!(bufs.provided, FIRST_PROVIDED + PROVIDE_CHUNK);
        ring.recv_multishot(0, bufs.group(), recv_ud());
        let mut done = wait_for(&mut ring, recv_ud());
        let mut buf = bufs.take(&mut done).expect("lent");
        assert_eq!(buf.id(), FIRST_PROVIDED);
        assert_eq!(buf.bytes_mut(), b"waits");
        // Never more than the ring's count.
        for _ in 0..10 {
            bufs.ran_dry();
        }
        assert_eq!(bufs.provided, 64);
        bufs.recycle(buf);
        for buf in held {
            bufs.recycle(buf);
        }
    }

    #[test]
    fn a_ring_smaller_than_the_first_chunk_provides_all_its_buffers() {
        let ring = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 2, 64).expect("buffer ring");
        assert_eq!(bufs.provided, 2);
        bufs.ran_dry();
        assert_eq!(bufs.provided, 2);
    }

    /// Which of the first `count` buffers of `bufs` have their first page resident (`mincore`).
    #[cfg(not(feature = "sim-ring"))]
    fn resident_buffers(bufs: &BufRing, count: usize) -> Vec<bool> {
        let mut pages = vec![0u8; count * bufs.buf_size / 4096];
        // SAFETY: the range is whole pages inside the live buffer mapping; `pages` holds a byte per page.
        let result = unsafe {
            libc::mincore(
                bufs.region.buffers.ptr().cast(),
                count * bufs.buf_size,
                pages.as_mut_ptr(),
            )
        };
        assert_eq!(result, 0, "mincore: {}", io::Error::last_os_error());
        (0..count)
            .map(|id| pages[id * bufs.buf_size / 4096] & 1 != 0)
            .collect()
    }

    #[test]
    #[cfg(not(feature = "sim-ring"))]
    fn buffers_unused_for_a_period_give_their_pages_back_and_refill() {
        let mut ring = Ring::new(8, 16, 4).expect("io_uring");
        assert!(ring.setup().defer_taskrun, "a kernel with DEFER_TASKRUN");
        let mut bufs = BufRing::new(&ring, 0, 4, 8192).expect("buffer ring");
        let (_ours, mut peer) = socket_in_slot_zero(&ring);
        ring.recv_multishot(0, bufs.group(), recv_ud());
        assert_eq!(resident_buffers(&bufs, 4), [false; 4]);
        // A lap of the ring: every buffer received into and given back.
        for round in 0..4u16 {
            peer.write_all(&[b'x'; 100]).expect("write");
            let mut done = wait_for(&mut ring, recv_ud());
            let buf = bufs.take(&mut done).expect("lent");
            assert_eq!(buf.id(), round);
            bufs.recycle(buf);
        }
        assert_eq!(resident_buffers(&bufs, 4), [true; 4]);
        // Buffer 0 is lent; buffer 1 holds the bytes of a completion posted but not read yet.
        peer.write_all(b"lent").expect("write");
        let mut done = wait_for(&mut ring, recv_ud());
        let mut lent = bufs.take(&mut done).expect("lent");
        assert_eq!(lent.id(), 0);
        peer.write_all(b"waiting").expect("write");
        let timeout = io_uring::types::Timespec::from(std::time::Duration::from_millis(10));
        let args = io_uring::types::SubmitArgs::new().timespec(&timeout);
        while ring.completions_waiting() == 0 {
            let _ = ring.inner().submitter().submit_with_args(1, &args);
        }
        // Every third call ends a period; in the first all four were received into: none goes.
        assert_eq!(bufs.release_unused(&ring, 3), 0);
        assert_eq!(bufs.release_unused(&ring, 3), 0);
        assert_eq!(bufs.release_unused(&ring, 3), 0);
        assert_eq!(resident_buffers(&bufs, 4), [true; 4]);
        // A period with no receive: buffers 2 and 3 (in the ring, ahead of the kernel) give their pages
        // back; the lent one and the one the kernel filled keep theirs.
        assert_eq!(bufs.release_unused(&ring, 1), 2 * 8192);
        assert_eq!(resident_buffers(&bufs, 4), [true, true, false, false]);
        // Given back already: nothing more to give.
        assert_eq!(bufs.release_unused(&ring, 1), 0);
        assert_eq!(lent.bytes_mut(), b"lent");
        let mut done = wait_for(&mut ring, recv_ud());
        let mut waiting = bufs.take(&mut done).expect("lent");
        assert_eq!((waiting.id(), &*waiting.bytes_mut()), (1, &b"waiting"[..]));
        // The kernel fills a given-back buffer as any other.
        peer.write_all(b"after").expect("write");
        let mut done = wait_for(&mut ring, recv_ud());
        let mut after = bufs.take(&mut done).expect("lent");
        assert_eq!((after.id(), &*after.bytes_mut()), (2, &b"after"[..]));
        assert_eq!(resident_buffers(&bufs, 4), [true, true, true, false]);
        for buf in [lent, waiting, after] {
            bufs.recycle(buf);
        }
    }

    #[test]
    #[should_panic(expected = "buffer 2 is lent already")]
    fn a_lent_buffer_cannot_be_lent_again() {
        let ring = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 4, 64).expect("buffer ring");
        let _first = bufs.take(&mut handing_over(&ring, 2, 1)).expect("lent");
        let _second = bufs.take(&mut handing_over(&ring, 2, 1));
    }

    #[test]
    #[should_panic(expected = "another ring's completion")]
    fn a_completion_of_another_ring_lends_nothing() {
        let ring = Ring::new(8, 16, 4).expect("io_uring");
        let other = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 4, 64).expect("buffer ring");
        let _ = bufs.take(&mut handing_over(&other, 0, 1));
    }

    #[test]
    #[should_panic(expected = "lent by another buffer ring")]
    fn recycle_takes_back_only_its_own_buffers() {
        let (ring_a, ring_b) = (Ring::new(8, 16, 4).unwrap(), Ring::new(8, 16, 4).unwrap());
        let mut a = BufRing::new(&ring_a, 0, 4, 64).expect("buffer ring");
        let mut b = BufRing::new(&ring_b, 0, 4, 64).expect("buffer ring");
        let buf = a.take(&mut handing_over(&ring_a, 1, 1)).expect("lent");
        // Buffer 1 of `b` is the kernel's: publishing it again would hand it out twice.
        b.recycle(buf);
    }

    #[test]
    fn buffer_sizes_that_would_wrap_the_mapping_are_refused() {
        let ring = Ring::new(8, 16, 4).expect("io_uring");
        for buf_size in [0, usize::MAX / 16384, u32::MAX as usize + 1] {
            let err = BufRing::new(&ring, 0, 32768, buf_size)
                .err()
                .expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{buf_size}");
        }
        assert!(!ring.has_buffers());
    }

    #[test]
    fn a_ring_serves_one_buffer_ring() {
        let ring = Ring::new(8, 16, 4).expect("io_uring");
        let _bufs = BufRing::new(&ring, 0, 4, 64).expect("buffer ring");
        // A completion does not say which group its buffer came from: a second group is refused.
        let err = BufRing::new(&ring, 1, 4, 64).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn the_buffers_stay_mapped_while_the_ring_may_fill_them() {
        let mut ring = Ring::new(8, 16, 4).expect("io_uring");
        let bufs = BufRing::new(&ring, 0, 4, 64).expect("buffer ring");
        let (_ours, mut peer) = socket_in_slot_zero(&ring);
        ring.recv_multishot(0, bufs.group(), recv_ud());
        ring.submit_and_wait(0).expect("io_uring_enter");
        // The buffer ring's owner drops it first (as a struct whose fields are in the other order would).
        drop(bufs);
        // Take the freed address range's place, as the allocator's next mapping would.
        let squatter = Mapping::new(4 * 64).expect("mmap");
        // SAFETY: the mapping is `4 * 64` bytes, live and ours.
        unsafe { std::ptr::write_bytes(squatter.ptr(), b'.', 4 * 64) };
        peer.write_all(b"late bytes").expect("write");
        let done = wait_for(&mut ring, recv_ud());
        // The kernel wrote into the buffers it was given, still mapped, not into an error or other memory.
        assert_eq!(done.result, 10, "{done:?}");
        // SAFETY: as above.
        let squatted = unsafe { std::slice::from_raw_parts(squatter.ptr(), 4 * 64) };
        assert!(
            squatted.iter().all(|&b| b == b'.'),
            "the kernel wrote into other memory"
        );
    }
}
